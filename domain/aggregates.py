"""Every aggregate of the domain: what a process builds its codec from (`eventstore.codec.Codec(AGGREGATES)`)."""

from domain.action import ACTION
from domain.catalog import CATALOG
from domain.environment import ENVIRONMENT
from domain.run import RUN
from domain.token import TOKEN
from domain.workspace import WORKSPACE

AGGREGATES = (WORKSPACE, ENVIRONMENT, CATALOG, ACTION, RUN, TOKEN)
