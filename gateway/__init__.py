"""SiO e-meldingsgateway: validates, protects, routes and receipts KITH messages for the SiO region."""

__version__ = "0.1.0"

__all__ = ["__version__"]
