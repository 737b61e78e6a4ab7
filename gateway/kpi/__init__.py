"""Edge KPIs: OEE, availability, performance and quality per machine and shift."""

from gateway.kpi.config import (
    KPI_TAGS,
    KpiSettings,
    OeeConfig,
    oee_tag_problems,
    validate_oee_against_tags,
)
from gateway.kpi.engine import KpiEngine, MachineKpi, ShiftFigures
from gateway.kpi.shifts import ShiftCalendar, ShiftInstance
from gateway.kpi.store import KpiStateStore

__all__ = [
    "KPI_TAGS",
    "KpiEngine",
    "KpiSettings",
    "KpiStateStore",
    "MachineKpi",
    "OeeConfig",
    "ShiftCalendar",
    "ShiftFigures",
    "ShiftInstance",
    "oee_tag_problems",
    "validate_oee_against_tags",
]
