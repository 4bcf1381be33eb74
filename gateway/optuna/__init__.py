"""Studies of Optuna's own clients: Optuna's gRPC storage protocol served by the gateway
(servicer.py), its requests checked (checks.py) and its messages made (convert.py); the
SQL is gateway/store/optuna.py."""
