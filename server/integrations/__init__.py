"""Integrations with other systems: EPCIS 2.0 export and import (epcis.py, service.py, api.py)."""
