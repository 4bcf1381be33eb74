"""Optuna's own gRPC storage protocol (`optuna.StorageService`, the one Optuna's
`GrpcStorageProxy` speaks), served by the gateway behind its tokens, roles, budgets and
TLS: an Optuna script's study and trials are then held here, as a study and attempts.

Why Optuna's protocol and not one of ours: `metalearn.optuna.Storage` is then Optuna's
own client (its trial cache included) on a channel with the caller's credentials, and
`metalearn optuna-proxy` serves the very same protocol on loopback for clients that
cannot send credentials. Statuses are the ones Optuna's client maps to its exceptions:
NOT_FOUND (KeyError), ALREADY_EXISTS (DuplicatedStudyError), FAILED_PRECONDITION
(UpdateFinishedTrialError), INVALID_ARGUMENT (ValueError), each naming its field.

Readers read every study; writers make studies and change only their own (admins any).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from optuna.storages._grpc.auto_generated import api_pb2, api_pb2_grpc

from gateway.auth import roles
from gateway.optuna import checks, convert
from gateway.store.optuna import OptunaStore
from metalearn import errors
from metalearn.status import translate_errors
from metalearn.v1 import optuna_trial_service_pb2 as otpb
from metalearn.v1 import optuna_trial_service_pb2_grpc as otpb_grpc

# The trailing metadata of CreateNewTrial's answer (metalearn/optuna reads them).
NUMBER_KEY = "metalearn-trial-number"
START_KEY = "metalearn-trial-start"
# "1" when the study had trials waiting as a worker's new trial was made ("0": none).
WAITING_KEY = "metalearn-study-waiting"
# Distributions already checked, by (trial, parameter): a study's later trials give the
# same ones, and the check needs the store only for the first of each.
_KNOWN = 16_384


def _scope() -> str | None:
    return roles.current().owner_scope


class OptunaStorageServicer(api_pb2_grpc.StorageServiceServicer):
    def __init__(self, store: OptunaStore) -> None:
        self._store = store
        # (study, parameter) -> a distribution another trial of the study gave it.
        self._known: OrderedDict[tuple[int, str], str] = OrderedDict()
        # trial id -> its study, for the trials this gateway made.
        self._studies: OrderedDict[int, int] = OrderedDict()

    def _remember(self, table: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > _KNOWN:
            table.popitem(last=False)

    # Studies.

    @translate_errors
    async def CreateNewStudy(
        self, request: api_pb2.CreateNewStudyRequest, context: Any
    ) -> api_pb2.CreateNewStudyReply:
        name = checks.study_name(request.study_name)
        directions = checks.directions(list(request.directions))
        principal = roles.current()
        study_id = await self._store.create_study(
            name, principal.name, directions, convert.study_spec(name, directions)
        )
        return api_pb2.CreateNewStudyReply(study_id=study_id)

    @translate_errors
    async def DeleteStudy(
        self, request: api_pb2.DeleteStudyRequest, context: Any
    ) -> api_pb2.DeleteStudyReply:
        await self._store.delete_study(request.study_id, _scope())
        return api_pb2.DeleteStudyReply()

    @translate_errors
    async def SetStudyUserAttribute(
        self, request: api_pb2.SetStudyUserAttributeRequest, context: Any
    ) -> api_pb2.SetStudyUserAttributeReply:
        checks.attribute(request.key, request.value)
        await self._store.set_study_attr(
            request.study_id, _scope(), False, request.key, request.value
        )
        return api_pb2.SetStudyUserAttributeReply()

    @translate_errors
    async def SetStudySystemAttribute(
        self, request: api_pb2.SetStudySystemAttributeRequest, context: Any
    ) -> api_pb2.SetStudySystemAttributeReply:
        checks.attribute(request.key, request.value)
        await self._store.set_study_attr(
            request.study_id, _scope(), True, request.key, request.value
        )
        return api_pb2.SetStudySystemAttributeReply()

    @translate_errors
    async def GetStudyIdFromName(
        self, request: api_pb2.GetStudyIdFromNameRequest, context: Any
    ) -> api_pb2.GetStudyIdFromNameReply:
        return api_pb2.GetStudyIdFromNameReply(
            study_id=await self._store.study_id(request.study_name)
        )

    @translate_errors
    async def GetStudyNameFromId(
        self, request: api_pb2.GetStudyNameFromIdRequest, context: Any
    ) -> api_pb2.GetStudyNameFromIdReply:
        row = await self._store.study(request.study_id)
        return api_pb2.GetStudyNameFromIdReply(study_name=row.name)

    @translate_errors
    async def GetStudyDirections(
        self, request: api_pb2.GetStudyDirectionsRequest, context: Any
    ) -> api_pb2.GetStudyDirectionsReply:
        row = await self._store.study(request.study_id)
        return api_pb2.GetStudyDirectionsReply(directions=convert.directions(row))

    @translate_errors
    async def GetStudyUserAttributes(
        self, request: api_pb2.GetStudyUserAttributesRequest, context: Any
    ) -> api_pb2.GetStudyUserAttributesReply:
        row = await self._store.study(request.study_id)
        return api_pb2.GetStudyUserAttributesReply(user_attributes=row.user_attrs)

    @translate_errors
    async def GetStudySystemAttributes(
        self, request: api_pb2.GetStudySystemAttributesRequest, context: Any
    ) -> api_pb2.GetStudySystemAttributesReply:
        row = await self._store.study(request.study_id)
        return api_pb2.GetStudySystemAttributesReply(system_attributes=row.system_attrs)

    @translate_errors
    async def GetAllStudies(
        self, request: api_pb2.GetAllStudiesRequest, context: Any
    ) -> api_pb2.GetAllStudiesReply:
        rows = await self._store.studies()
        return api_pb2.GetAllStudiesReply(studies=[convert.study(r) for r in rows])

    # Trials.

    @translate_errors
    async def CreateNewTrial(
        self, request: api_pb2.CreateNewTrialRequest, context: Any
    ) -> api_pb2.CreateNewTrialReply:
        study_id = request.study_id
        if request.template_trial_is_none:  # a worker's new trial: the hot path
            # The study's name goes in by the statement (no cache of it to go stale).
            made = await self._store.start_trial(
                study_id, _scope(), convert.attempt_doc(study_id, "-", 0)
            )
        else:
            template = checks.template(request.template_trial)

            def doc_of(study: str, number: int) -> dict[str, Any]:
                return convert.attempt_doc(
                    study_id, study, number, template.params, template.values, template.origin
                )

            made = await self._store.create_trial(study_id, _scope(), doc_of, template)
        self._remember(self._studies, made.id, study_id)
        # Beyond Optuna's reply, which its clients read alone: the new trial's number and
        # start, so that metalearn.optuna.Storage knows its own trial without reading it,
        # and whether trials wait, so that it need not read them before its next trial.
        told = [(NUMBER_KEY, str(made.number)), (START_KEY, checks.format_time(made.started_at))]
        if request.template_trial_is_none:
            told.append((WAITING_KEY, "1" if made.waiting else "0"))
        context.set_trailing_metadata(tuple(told))
        return api_pb2.CreateNewTrialReply(trial_id=made.id)

    @translate_errors
    async def SetTrialParameter(
        self, request: api_pb2.SetTrialParameterRequest, context: Any
    ) -> api_pb2.SetTrialParameterReply:
        name = request.param_name
        checks.parameter(name)
        dist = checks.distribution("distribution", request.distribution)
        value = checks.external("param_value_internal", dist, request.param_value_internal)
        study_id = self._studies.get(request.trial_id)
        earlier = self._known.get((study_id, name)) if study_id is not None else None
        if earlier is None or not checks.is_compatible(earlier, dist):
            # Known here only from this gateway's own trials: the store says for sure.
            earlier = await self._store.earlier_distribution(request.trial_id, name)
        if earlier is not None and not checks.is_compatible(earlier, dist):
            # A finished trial is refused as such first, as Optuna's storages do.
            await self._store.writable(request.trial_id, _scope())
            checks.compatible("distribution", earlier, dist)
        await self._store.set_param(
            request.trial_id, _scope(), name, value, request.param_value_internal,
            request.distribution,
        )  # fmt: skip
        if study_id is not None:
            self._remember(self._known, (study_id, name), request.distribution)
        return api_pb2.SetTrialParameterReply()

    @translate_errors
    async def GetTrialIdFromStudyIdTrialNumber(
        self, request: api_pb2.GetTrialIdFromStudyIdTrialNumberRequest, context: Any
    ) -> api_pb2.GetTrialIdFromStudyIdTrialNumberReply:
        trial_id = await self._store.trial_id(request.study_id, request.trial_number)
        return api_pb2.GetTrialIdFromStudyIdTrialNumberReply(trial_id=trial_id)

    @translate_errors
    async def SetTrialStateValues(
        self, request: api_pb2.SetTrialStateValuesRequest, context: Any
    ) -> api_pb2.SetTrialStateValuesReply:
        state = checks.state(request.state)
        values = checks.values(list(request.values))
        updated = await self._store.write(request.trial_id, _scope(), {}, state, values)
        return api_pb2.SetTrialStateValuesReply(trial_updated=updated)

    @translate_errors
    async def SetTrialIntermediateValue(
        self, request: api_pb2.SetTrialIntermediateValueRequest, context: Any
    ) -> api_pb2.SetTrialIntermediateValueReply:
        step = checks.step(request.step)
        await self._store.write(
            request.trial_id, _scope(), {step: request.intermediate_value}, None, None
        )
        return api_pb2.SetTrialIntermediateValueReply()

    @translate_errors
    async def SetTrialUserAttribute(
        self, request: api_pb2.SetTrialUserAttributeRequest, context: Any
    ) -> api_pb2.SetTrialUserAttributeReply:
        checks.attribute(request.key, request.value)
        await self._store.set_attr(request.trial_id, _scope(), False, request.key, request.value)
        return api_pb2.SetTrialUserAttributeReply()

    @translate_errors
    async def SetTrialSystemAttribute(
        self, request: api_pb2.SetTrialSystemAttributeRequest, context: Any
    ) -> api_pb2.SetTrialSystemAttributeReply:
        checks.attribute(request.key, request.value)
        await self._store.set_attr(request.trial_id, _scope(), True, request.key, request.value)
        return api_pb2.SetTrialSystemAttributeReply()

    @translate_errors
    async def GetTrial(
        self, request: api_pb2.GetTrialRequest, context: Any
    ) -> api_pb2.GetTrialReply:
        return api_pb2.GetTrialReply(trial=convert.trial(await self._store.trial(request.trial_id)))

    @translate_errors
    async def GetTrials(
        self, request: api_pb2.GetTrialsRequest, context: Any
    ) -> api_pb2.GetTrialsReply:
        rows = await self._store.trials(
            request.study_id, list(request.included_trial_ids), request.trial_id_greater_than
        )
        return api_pb2.GetTrialsReply(trials=[convert.trial(r) for r in rows])


_WRITE_STATES = {
    otpb.OPTUNA_TRIAL_STATE_RUNNING: "RUNNING",
    otpb.OPTUNA_TRIAL_STATE_COMPLETE: "COMPLETE",
    otpb.OPTUNA_TRIAL_STATE_PRUNED: "PRUNED",
    otpb.OPTUNA_TRIAL_STATE_FAIL: "FAIL",
}


class OptunaTrialServicer(otpb_grpc.OptunaTrialServiceServicer):
    """OptunaTrialService: a trial's intermediate values and its end in one call (what
    `metalearn.optuna.Storage` sends for the trials its worker runs)."""

    def __init__(self, store: OptunaStore) -> None:
        self._store = store

    @translate_errors
    async def WriteTrial(
        self, request: otpb.WriteTrialRequest, context: Any
    ) -> otpb.WriteTrialResponse:
        intermediate = checks.intermediate(list(request.steps), list(request.intermediate_values))
        state = None
        if request.state != otpb.OPTUNA_TRIAL_STATE_UNSPECIFIED:
            if request.state not in _WRITE_STATES:
                raise errors.InvalidArgument.one("state", "must be a trial state")
            state = _WRITE_STATES[request.state]
        values = checks.values(list(request.values))
        if values is not None and state is None:
            raise errors.InvalidArgument.one("values", "are given with a state to end in")
        updated = await self._store.write(request.trial_id, _scope(), intermediate, state, values)
        return otpb.WriteTrialResponse(trial_updated=updated)
