"""Stage ``evaluate``: the numbers (:mod:`.scoring`: MPJPE and its protocols,
tables) and what is written from them (:mod:`.report`: report, figures, the stage)."""

from pose3d.tasks.evaluate.report import (FIGURES, display_sequence, flat_metrics, render_report,
                                          run_evaluation, run_stage)
from pose3d.tasks.evaluate.scoring import (MethodResult, evaluate_files, evaluate_predictions,
                                           metrics_json, per_action_table, per_joint_table)

__all__ = ["FIGURES", "MethodResult", "display_sequence", "evaluate_files", "evaluate_predictions",
           "flat_metrics", "metrics_json", "per_action_table", "per_joint_table", "render_report",
           "run_evaluation", "run_stage"]
