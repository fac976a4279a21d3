"""The one scheduler every run goes through (``scheduler``) and its strategies (``strategies``)."""

from geep.scheduling.scheduler import Pool, Row, Scheduler, Step, Strategy
from geep.scheduling.strategies import FILLS, POOL_ORDERS, STRATEGIES, LayerPools, Pooled, Shrinking, get_strategy

__all__ = ["FILLS", "LayerPools", "POOL_ORDERS", "Pool", "Pooled", "Row", "STRATEGIES", "Scheduler", "Shrinking", "Step",
           "Strategy", "get_strategy"]
