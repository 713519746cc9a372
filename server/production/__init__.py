"""Manufacturers' production: commissioning lots (PRODUCE) and their serial numbers."""
