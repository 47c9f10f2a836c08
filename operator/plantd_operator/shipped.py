"""Which components the plantd image really runs, so the operator renders nothing else.

A rendered container whose command exits "not in this release yet" would keep every cluster
from becoming Ready on real nodes (kwok hides it: it starts no containers). The unit test
``test_operator_contract`` runs ``plantd <component> --help`` for each entry here and fails
when this list and the installed package disagree, in either direction.
"""

from __future__ import annotations

from typing import Final

from plantd.common import contract

# Components the operator renders as containers: each must answer `plantd <c> --help`.
RENDERED: Final = (contract.BROKER, contract.STATE, contract.IDENTITY, contract.GATEWAY)
# With its SQLite store `plantd identity` keeps users and refresh tokens in a file inside the
# pod: replicas would not share them. More than this is then reported (IdentityReplicasCapped)
# and not rendered. On Redis (the cluster's state store) identity replicas are stateless.
IDENTITY_MAX_REPLICAS: Final = 1
# Whether `plantd broker` can merge the modules enrolled with org.plantd.Identity into its
# registry (PLANTD_BROKER_IDENTITY_REGISTRY); the contract test checks it against --help.
BROKER_IDENTITY_REGISTRY: Final = True

# The managed Redis image when a cluster names none (the operator's --default-redis-image).
DEFAULT_REDIS_IMAGE: Final = "redis:7.4"
