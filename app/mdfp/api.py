"""JSON routes of MDFP plans: thin wrappers around app.mdfp.service."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from fastapi.responses import Response

from app.api.deps import SessionDep
from app.core.errors import error_body
from app.core.urls import urls
from app.mdfp import service
from app.mdfp.presets import SURVEY_PRESET
from app.mdfp.schemas import PlanOut, PlanRequest, PlanSpec, PresetList

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No plan with this id",
        "content": {"application/json": {"example": error_body(404, "plan 'nope' not found")}},
    },
    422: {
        "description": "The spec breaks a rule; `errors[].loc` points at the offending field",
        "content": {
            "application/json": {
                "example": error_body(
                    422,
                    "body.spec.target_modalities.1: unknown modality 'Xray2'; allowed values: CT, MR, ...",
                    [
                        {
                            "loc": ["body", "spec", "target_modalities", 1],
                            "msg": "unknown modality 'Xray2'; allowed values: CT, MR, ...",
                        }
                    ],
                )
            }
        },
    },
}


@router.get("/plans/schema", operation_id="get_plan_spec_schema", response_model=dict[str, Any])
def get_plan_spec_schema() -> dict[str, Any]:
    """The JSON Schema of a plan spec (the body of POST /plans is `{"spec": <this>}`)."""
    return PlanSpec.model_json_schema()


@router.get("/plans/presets", operation_id="list_plan_presets", response_model=PresetList)
def list_plan_presets() -> PresetList:
    """Ready-made specs, the survey's example goal first."""
    presets = service.list_presets()
    return PresetList(count=len(presets), results=presets)


@router.post(
    "/plans",
    operation_id="create_plan",
    status_code=201,
    response_model=PlanOut,
    responses={422: ERRORS[422]},
)
def create_plan(
    session: SessionDep,
    body: Annotated[
        PlanRequest,
        Body(
            openapi_examples={
                "survey": {
                    "summary": "The survey's example goal",
                    "value": {"spec": service.preset_spec(SURVEY_PRESET).model_dump(mode="json")},
                },
                "synonyms": {
                    "summary": "Synonyms and any case are accepted",
                    "value": {
                        "spec": {
                            "goal": "Brain MRI segmentation, open data only",
                            "target_modalities": ["mri"],
                            "target_task_types": ["seg"],
                            "anatomy_whitelist": ["head"],
                            "access_allowlist": ["public"],
                            "min_valid_images_per_dataset": 50,
                        }
                    },
                },
            }
        ),
    ],
) -> Response:
    """Run the four MDFP phases for a spec on the current catalog and save the plan.

    The same spec on the same catalog version always gives the same phases. The plan's id is unguessable;
    its page is `url`, and it can be read again at `GET /api/v1/plans/{id}`.
    """
    stored = service.create_plan_json(session, body.spec)
    # already JSON text: re-validating tens of thousands of rows through PlanOut would only cost time
    return Response(
        stored.document_json(),
        status_code=201,
        media_type="application/json",
        headers={"Location": urls.plan(stored.id)},
    )


@router.get("/plans/{plan_id}", operation_id="get_plan", response_model=PlanOut, responses={404: ERRORS[404]})
def get_plan(
    session: SessionDep,
    plan_id: Annotated[str, Path(description="The id returned when the plan was created")],
) -> Response:
    """A saved plan: its spec, the catalog version it was computed on, the four phases and the summary."""
    return Response(service.get_plan_json(session, plan_id).document_json(), media_type="application/json")
