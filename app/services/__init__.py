"""Glue between the Streamlit pages and the library, behind one small facade: ``from app import services``.

Pages stay thin: they lay out widgets and call these functions. The package is split by concern:

=================  ==========================================================================================
``sources``        the session's task set, cached loading, uploads (via the one outcome-file parser)
``summaries``      per-model quality with intervals, costs and prices (Start page)
``specs``          routers as the app offers them: preselection, app defaults (the fast encoder), labels
``compare``        settings, one cached evaluation per router, live progress, warnings
``figures``        operating points, ranking (savings in percent), the frontier figure (:mod:`evals.figures`)
``runs``           MLflow runs, read and written through :mod:`evals.tracking`
``drilldown``      per prompt and per category at each router's operating point
``export``         measurement at an operating point, refit, write the deployable folder
``production``     promised vs delivered of a serving router's decision log (Production page)
``warmup``         building the default encoder in the background from the first page view on
=================  ==========================================================================================

Environment:
    ROUTELAB_APP_DEFAULT_SOURCE: the task set the app opens on (a source name such as ``mmlu-pro`` or a path
        to a long-format outcome file). Default: ``mmlu-pro``.
    ROUTELAB_APP_ROUTERS: comma-separated routers the Compare page preselects.
"""

from __future__ import annotations

from app.services.compare import (
    SPLIT_FRACTIONS,
    CompareSettings,
    Progress,
    combine,
    evaluate_router,
    operating_lam,
    prepared_table,
    result_warnings,
    run_compare,
    test_table,
)
from app.services.drilldown import category_breakdown, decisions, routed_by, sample_detail
from app.services.export import export, fitted_router, point_summary
from app.services.figures import (
    compare_figure,
    display_frame,
    overlay_figure,
    percent_columns,
    point_table,
    ranking_frame,
    router_runs_table,
    single_model_points,
)
from app.services.production import default_paths as production_default_paths
from app.services.production import drift_frame as production_drift_frame
from app.services.production import offpolicy_frame as production_offpolicy_frame
from app.services.production import production_report
from app.services.production import saving_figure as production_saving_figure
from app.services.production import slice_frame as production_slice_frame
from app.services.production import telemetry_frame as production_telemetry_frame
from app.services.runs import (
    list_evaluations,
    list_experiments,
    log_to_mlflow,
    router_runs,
    run_frontier,
    settings_from_run,
    spec_from_run,
    tracking_label,
    tracking_uri,
)
from app.services.sources import (
    DEFAULT_SOURCE_ENV,
    MAX_UPLOAD_MB,
    available_sources,
    current_source,
    current_table,
    default_source,
    load_prices,
    load_table,
    parse_outcome_file,
    save_table,
    save_upload,
    set_source,
    source_label,
)
from app.services.specs import (
    APP_PARAM_DEFAULTS,
    DEFAULT_ROUTERS,
    ENCODER_NOTES,
    MODEL_PARAMS,
    ROUTERS_ENV,
    default_routers,
    encoder_choices,
    make_spec,
    router_class,
    router_defaults,
    router_description,
    router_names,
    spec_key,
    spec_label,
)
from app.services.summaries import category_counts, mean_ci, model_overview, overview_of
from app.services.warmup import start_encoder_warmup, wait_for_warmup
from evals.figures import router_color

__all__ = [
    "APP_PARAM_DEFAULTS",
    "DEFAULT_ROUTERS",
    "DEFAULT_SOURCE_ENV",
    "ENCODER_NOTES",
    "MAX_UPLOAD_MB",
    "MODEL_PARAMS",
    "ROUTERS_ENV",
    "SPLIT_FRACTIONS",
    "CompareSettings",
    "Progress",
    "available_sources",
    "category_breakdown",
    "category_counts",
    "combine",
    "compare_figure",
    "current_source",
    "current_table",
    "decisions",
    "display_frame",
    "default_routers",
    "default_source",
    "encoder_choices",
    "evaluate_router",
    "export",
    "fitted_router",
    "list_evaluations",
    "list_experiments",
    "load_prices",
    "load_table",
    "log_to_mlflow",
    "make_spec",
    "mean_ci",
    "model_overview",
    "operating_lam",
    "overlay_figure",
    "overview_of",
    "parse_outcome_file",
    "percent_columns",
    "point_summary",
    "point_table",
    "prepared_table",
    "ranking_frame",
    "result_warnings",
    "routed_by",
    "router_class",
    "router_color",
    "router_defaults",
    "router_description",
    "router_names",
    "router_runs",
    "router_runs_table",
    "run_compare",
    "run_frontier",
    "sample_detail",
    "save_table",
    "save_upload",
    "set_source",
    "settings_from_run",
    "single_model_points",
    "source_label",
    "start_encoder_warmup",
    "spec_from_run",
    "spec_key",
    "spec_label",
    "test_table",
    "tracking_label",
    "tracking_uri",
    "wait_for_warmup",
    "production_default_paths",
    "production_drift_frame",
    "production_offpolicy_frame",
    "production_telemetry_frame",
    "production_report",
    "production_saving_figure",
    "production_slice_frame",
]
