"""Principals, roles, and which roles may call which RPC: the gateway's whole policy.

The policy is a table keyed by full method names, checked to cover every RPC the
server serves before it starts (`check_covers`), so a new RPC cannot be left open by
forgetting it here: it would stop the gateway from starting instead.
"""

from __future__ import annotations

import contextvars
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from metalearn import errors


class Role(enum.Enum):
    """What a principal may do; the values are the store's spellings."""

    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"
    TRAINER = "trainer"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and its role."""

    name: str
    role: Role

    @property
    def owner_scope(self) -> str | None:
        """The owner an attempt must have for this principal to change it (None: any)."""
        return None if self.role is Role.ADMIN else self.name


# Who may call a method of each kind. Admins may call everything.
READ = frozenset({Role.READER, Role.WRITER, Role.ADMIN})
WRITE = frozenset({Role.WRITER, Role.ADMIN})
ADMIN = frozenset({Role.ADMIN})
TRAINER = frozenset({Role.TRAINER, Role.ADMIN})
READ_OR_TRAINER = READ | TRAINER

_AS = "/metalearn.v1.AttemptService/"
_DS = "/metalearn.v1.DatasetService/"
_TR = "/metalearn.v1.TrainerRegistryService/"
_TS = "/metalearn.v1.TokenService/"
_SS = "/metalearn.v1.StudyService/"
_KS = "/metalearn.v1.TaskService/"
_CS = "/metalearn.v1.CurveService/"
_RS = "/metalearn.v1.ReportingService/"
# Optuna's own storage protocol (gateway/optuna/), as Optuna's GrpcStorageProxy speaks it.
_OS = "/optuna.StorageService/"

# Ownership of an attempt is checked by the store, inside the statement that changes
# it: a writer passes this table for any attempt, then the row decides.
POLICY: dict[str, frozenset[Role]] = {
    _AS + "CreateAttempt": WRITE,
    _AS + "ImportAttempts": WRITE,
    _AS + "BatchCreateAttempts": WRITE,
    _AS + "GetAttempt": READ,
    _AS + "UpdateAttempt": WRITE,
    _AS + "ListAttempts": READ,
    _AS + "DeleteAttempt": WRITE,
    _AS + "GetLatestIndex": READ,
    _AS + "Train": WRITE,
    _AS + "Test": WRITE,
    _AS + "WatchAttempt": READ,
    _AS + "CancelAttempt": WRITE,
    _AS + "DownloadModel": READ,
    _DS + "UploadImages": WRITE,
    _DS + "ListLabels": READ,
    # A trainer reads only the labels of the work it holds (the servicer checks).
    _DS + "ReadImages": READ_OR_TRAINER,
    _DS + "ListImages": READ_OR_TRAINER,
    # Images belong to nobody in particular: only an admin deletes a label.
    _DS + "DeleteImages": ADMIN,
    _TR + "RegisterTrainer": TRAINER,
    _TR + "Heartbeat": TRAINER,
    # Only the file of a run a trainer of the caller's principal holds (the servicer checks).
    _TR + "ReadRunFile": TRAINER,
    _TS + "CreateToken": ADMIN,
    _TS + "ListTokens": ADMIN,
    _TS + "RevokeToken": ADMIN,
    _TS + "WhoAmI": READ_OR_TRAINER,
    # A study's owner stops and deletes it (the store checks, as for attempts).
    _SS + "CreateStudy": WRITE,
    _SS + "GetStudy": READ,
    _SS + "ListStudies": READ,
    _SS + "WatchStudy": READ,
    _SS + "StopStudy": WRITE,
    _SS + "DeleteStudy": WRITE,
    # A study's owner asks for its trials (the servicer checks, as for stopping it).
    _SS + "AskTrial": WRITE,
    # Profiling costs a trainer seconds: writers ask for it (a reader's FindSimilarTasks
    # and SuggestCommand by labels may profile too: reading needs the same profile).
    _KS + "ProfileTask": WRITE,
    _KS + "ListTasks": READ,
    _KS + "FindSimilarTasks": READ,
    _KS + "SuggestCommand": READ,
    _KS + "FitTaskDistance": ADMIN,
    # A fit costs the gateway up to a minute of CPU: admins only.
    _CS + "FitCurveModel": ADMIN,
    _CS + "GetCurveModel": READ,
    _CS + "ForecastCurve": READ,
    # Writers report their own runs (the servicer checks the owner, as the store does
    # for attempts); any reader reads a run's metrics.
    _RS + "StartRun": WRITE,
    _RS + "ReportRun": WRITE,
    _RS + "UploadModel": WRITE,
    _RS + "UploadTaskSample": WRITE,
    _RS + "FinishRun": WRITE,
    _RS + "GetMetricHistory": READ,
    # Optuna's clients: writers make studies and change their own (the store checks the
    # owner, as for attempts); readers read every study, as through StudyService.
    _OS + "CreateNewStudy": WRITE,
    _OS + "DeleteStudy": WRITE,
    _OS + "SetStudyUserAttribute": WRITE,
    _OS + "SetStudySystemAttribute": WRITE,
    _OS + "GetStudyIdFromName": READ,
    _OS + "GetStudyNameFromId": READ,
    _OS + "GetStudyDirections": READ,
    _OS + "GetStudyUserAttributes": READ,
    _OS + "GetStudySystemAttributes": READ,
    _OS + "GetAllStudies": READ,
    _OS + "CreateNewTrial": WRITE,
    _OS + "SetTrialParameter": WRITE,
    _OS + "GetTrialIdFromStudyIdTrialNumber": READ,
    _OS + "SetTrialStateValues": WRITE,
    _OS + "SetTrialIntermediateValue": WRITE,
    _OS + "SetTrialUserAttribute": WRITE,
    _OS + "SetTrialSystemAttribute": WRITE,
    _OS + "GetTrial": READ,
    _OS + "GetTrials": READ,
    # metalearn.optuna.Storage's one-call trial writes (the store checks the owner).
    "/metalearn.v1.OptunaTrialService/WriteTrial": WRITE,
}


def check_covers(services: Iterable[ServiceDescriptor]) -> None:
    """Fails start-up if a served RPC has no rule (fail closed, never open)."""
    missing = [
        f"/{service.full_name}/{method.name}"
        for service in services
        for method in service.methods
        if f"/{service.full_name}/{method.name}" not in POLICY
    ]
    if missing:
        raise RuntimeError(f"no access rule for {missing}: add them to gateway.auth.roles")


_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def set_current(principal: Principal) -> None:
    """Records the caller for the rest of this call (each call runs in its own task)."""
    _current.set(principal)


def current() -> Principal:
    """The caller of the RPC being served."""
    try:
        return _current.get()
    except LookupError:
        # Only reachable if a servicer runs outside the interceptor: refuse, never allow.
        raise errors.Unauthenticated("no credential") from None
