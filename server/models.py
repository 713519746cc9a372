"""Every table, imported once so Alembic and tests see the whole metadata."""

from server.catalog import models as catalog_models
from server.core import audit
from server.core.db import Base
from server.inventory import models as inventory_models
from server.network import models as network_models

metadata = Base.metadata

__all__ = ["audit", "catalog_models", "inventory_models", "metadata", "network_models"]
