"""Controlled drugs: the register per product and location, and the witness of each disposal,
adjustment and count variance."""
