"""Every table, imported once so Alembic and tests see the whole metadata."""

from server.alerts import models as alert_models
from server.catalog import models as catalog_models
from server.controlled import models as controlled_models
from server.core import audit
from server.core.db import Base
from server.counts import models as count_models
from server.fhir import models as fhir_models
from server.finance import models as finance_models
from server.forecasting import models as forecasting_models
from server.integrations import models as integration_models
from server.inventory import models as inventory_models
from server.network import models as network_models
from server.production import models as production_models
from server.purchasing import models as purchasing_models
from server.scanning import models as scanning_models
from server.shipments import models as shipment_models
from server.supervision import models as supervision_models
from server.suppliers import models as supplier_models
from server.transfers import models as transfer_models
from server.webhooks import models as webhook_models

metadata = Base.metadata

__all__ = [
    "alert_models",
    "audit",
    "catalog_models",
    "controlled_models",
    "count_models",
    "fhir_models",
    "finance_models",
    "forecasting_models",
    "integration_models",
    "inventory_models",
    "metadata",
    "network_models",
    "production_models",
    "purchasing_models",
    "scanning_models",
    "shipment_models",
    "supervision_models",
    "supplier_models",
    "transfer_models",
    "webhook_models",
]
