"""Rules stage: green-factory screening, efficiency classes and double-control alerts."""
