"""Optuna's own storage test suite, run against `metalearn.optuna.Storage`.

`optuna.testing.pytest_storages.StorageTestCase` is the suite Optuna ships (in the
pinned optuna release, requirements.txt) for storages of other projects: every test of
its storages' contract, given a `storage` fixture. Here that fixture is a
`metalearn.optuna.Storage` talking to a real gateway over gRPC, on an empty database.

Tests that do not apply, and why (each is skipped with its reason):
- `test_create_new_study_with_empty_name`: a study is a metalearn resource, and every
  resource's name has 1 to 128 letters, digits, '.', '_' or '-' (gateway/names.py). An
  empty name is INVALID_ARGUMENT, named `study_name`.
- `test_get_all_trials_params_order`: parameters are kept in a JSON object, which
  PostgreSQL orders by key; Optuna's own gRPC proxy storage skips it for its own reason
  (its protocol carries parameters in a map, which has no order either).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from optuna.testing.pytest_storages import StorageTestCase

from metalearn.optuna import Storage
from tests.harness import GatewayThread

NOT_APPLICABLE = {
    "test_create_new_study_with_empty_name": "a study's name is a resource name: 1 to 128"
    " letters, digits, '.', '_' or '-'",
    "test_get_all_trials_params_order": "parameters are a JSON object (and a map in Optuna's"
    " protocol): neither keeps their order, as for Optuna's own gRPC proxy",
}


class TestMetalearnStorage(StorageTestCase):
    @pytest.fixture
    def storage(self, gateway: GatewayThread, request: pytest.FixtureRequest) -> Iterator[Storage]:
        reason = NOT_APPLICABLE.get(request.node.originalname)
        if reason is not None:
            pytest.skip(reason)
        storage = Storage(f"127.0.0.1:{gateway.port}", token=gateway.admin_token)
        try:
            yield storage
        finally:
            storage.close()
