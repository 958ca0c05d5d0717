"""The pure model of certfleet: no I/O, no clock, nothing else of the project."""
