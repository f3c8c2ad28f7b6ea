"""The steps of ``nnunet_vertkd.workflow`` against a recording stand-in for the Pipeline (no console script
runs; the long path is covered by the slow miniatures of the demo and the study)."""
import json
import threading
from pathlib import Path

import pytest

from nnunet_vertkd import workflow
from nnunet_vertkd.benchmarks.pipeline import PipelineError


class RecordingPipeline:
    """Duck-typed ``Pipeline``: records the calls, fakes what the steps read back."""

    def __init__(self, root: Path, train_ids=("a", "b", "sub-verse005"), test_ids=("c",), fail_train=()):
        self.root = Path(root)
        self.calls = []
        self.train_ids, self.test_ids = list(train_ids), list(test_ids)
        self.fail_train = set(fail_train)
        self.lock = threading.Lock()

    def _record(self, *call):
        with self.lock:
            self.calls.append(call)

    def generate_synthetic(self, out, cases, seed, scale, spacing=None, num_processes=1):
        self._record("generate", cases, seed, scale, spacing, num_processes)
        return Path(out)

    def convert(self, roots, dataset_id, spacing_mm=1.0, num_processes=1):
        self._record("convert", [Path(r).name for r in roots], dataset_id, spacing_mm)
        return {"skipped": [{"case": "sub-verse004", "reason": "mask without CT"}]}

    def plan_and_preprocess(self, dataset_ids, num_processes=1, verify=True):
        self._record("plan", list(dataset_ids))

    def cases_in(self, dataset_id, sub="imagesTs"):
        return list(self.train_ids if sub == "imagesTr" else self.test_ids)

    def hold_out(self, dataset_ids, case_ids, fold=0):
        self._record("hold_out", list(dataset_ids), list(case_ids))
        return list(case_ids)

    def model_folder(self, dataset_id, trainer, results=None):
        return Path(results or self.root / "results") / f"Dataset{dataset_id}" / f"{trainer}__nnUNetPlans__3d_fullres"

    def train(self, dataset_id, trainer, fold="0", tag=None, extra_env=None, n_proc_da=None):
        self._record("train", trainer, dict(extra_env or {}))
        if trainer in self.fail_train:
            raise PipelineError(f"training {trainer} failed")

    def splits_file(self, dataset_id):
        path = self.root / "splits_final.json"
        path.write_text(json.dumps([{"train": ["a"], "val": ["b", "sub-verse005"]}]))
        return path

    def link_cases(self, dataset_id, case_ids, out, images="imagesTr", labels="labelsTr"):
        self._record("link", list(case_ids), images)
        folders = {"images": Path(out) / "images", "labels": Path(out) / "labels"}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        for c in case_ids:
            (folders["images"] / f"{c}_0000.nii.gz").write_text(c)
        return folders

    def predict(self, inputs, output, dataset_id, trainer, fold="0", spine_dataset_id=None, spine_trainer=None,
                save_preview=False, disable_tta=True, tag=None, check=False, overwrite=True, extra_env=None):
        self._record("predict", trainer, spine_dataset_id, overwrite, tag)
        Path(output).mkdir(parents=True, exist_ok=True)
        images = sorted(Path(inputs).iterdir())
        done = images if spine_dataset_id is None else images[:1]  # the spine model finds one spine only
        for f in done:
            (Path(output) / f.name.replace("_0000.nii.gz", ".nii.gz")).write_text("mask")
        return 0

    def evaluate(self, ref, pred, out, tag="evaluate", quiet=True):
        self._record("evaluate", Path(out).name, tag)
        return {"overall": {}}


RECIPE = workflow.DataRecipe(501, cases=3, seed=7, synthetic_scale=0.4, spacing_mm=2.0, spine_dataset_id=502,
                             num_processes=2)


@pytest.fixture
def real_samples(monkeypatch, tmp_path):
    real = tmp_path / "verse_sample"
    (real / "rawdata" / "sub-verse005").mkdir(parents=True)
    (real / "rawdata" / "sub-verse005" / "sub-verse005_ct.nii.gz").write_text("")
    monkeypatch.setattr(workflow, "real_sample_dir", lambda: real)
    return real


def test_prepare_data_runs_the_data_steps_in_order_and_records_the_held_out_cases(tmp_path, real_samples, capsys):
    p = RecordingPipeline(tmp_path)
    headers = workflow.StepHeaders(total=8)
    real_ids = workflow.prepare_data(p, tmp_path, RECIPE, announce=headers)
    assert real_ids == ["sub-verse005"]
    assert [c[0] for c in p.calls] == ["generate", "convert", "plan", "hold_out"]
    assert p.calls[0] == ("generate", 3, 7, 0.4, None, 2)
    assert p.calls[1] == ("convert", ["synthetic", "verse_sample"], 501, 2.0)
    assert p.calls[2] == ("plan", [501, 502]) and p.calls[3] == ("hold_out", [501, 502], ["sub-verse005"])
    text = capsys.readouterr().out
    assert "=== [1/8] generate 3 synthetic VerSe scans (seed 7) ===" in text
    assert "=== [3/8] nnUNetv2_plan_and_preprocess ===" in text and headers.n == 4
    assert "conversion skipped 1 case(s): sub-verse004: mask without CT" in text
    assert json.loads((tmp_path / workflow.DATA_READY_FLAG).read_text()) == {"real_ids": ["sub-verse005"]}

    # --resume: nothing runs again; the flag of earlier versions ("ok") is understood too
    p2 = RecordingPipeline(tmp_path)
    assert workflow.prepare_data(p2, tmp_path, RECIPE, resume=True) == ["sub-verse005"] and not p2.calls
    (tmp_path / workflow.DATA_READY_FLAG).write_text("ok\n")
    assert workflow.prepare_data(p2, tmp_path, RECIPE, resume=True) == ["sub-verse005"] and not p2.calls


def test_prepare_data_without_real_samples(tmp_path, monkeypatch):
    p = RecordingPipeline(tmp_path)
    recipe = workflow.DataRecipe(521, 2, 0, 0.4, 2.0, use_real=False)
    assert workflow.prepare_data(p, tmp_path, recipe, announce=lambda text: None) == []
    assert [c[0] for c in p.calls] == ["generate", "convert", "plan"]
    assert p.calls[1][1] == ["synthetic"] and p.calls[2] == ("plan", [521])


def test_train_skips_finished_models_on_resume(tmp_path, capsys):
    p = RecordingPipeline(tmp_path)
    done = workflow.TrainJob(501, "VertKDTeacherTrainer_demo", "train teacher")
    new = workflow.TrainJob(501, "VertKDStudentTrainer_demo", "train student", {"VERTKD_STUDY_SEED": "1"})
    ckpt = workflow.checkpoint_of(p, done)
    ckpt.parent.mkdir(parents=True)
    ckpt.write_text("")
    announced = []
    workflow.train_all(p, [done, new], resume=True, announce=lambda job: announced.append(job.tag))
    assert announced == ["train teacher", "train student"]
    assert p.calls == [("train", "VertKDStudentTrainer_demo", {"VERTKD_STUDY_SEED": "1"})]
    assert "already trained" in capsys.readouterr().out
    workflow.train_all(p, [done], resume=False)
    assert p.calls[-1][1] == "VertKDTeacherTrainer_demo"


def test_parallel_trainings_report_every_failure_after_all_ended(tmp_path):
    p = RecordingPipeline(tmp_path, fail_train={"A", "C"})
    jobs = [workflow.TrainJob(521, name, f"train {name}") for name in "ABC"]
    with pytest.raises(PipelineError) as e:
        workflow.train_all(p, jobs, parallel=2)
    assert sorted(c[1] for c in p.calls) == ["A", "B", "C"]
    assert "training A failed" in str(e.value) and "training C failed" in str(e.value)


def test_test_sets_fall_back_to_the_synthetic_validation_cases(tmp_path):
    p = RecordingPipeline(tmp_path, test_ids=())
    sets, test_ids = workflow.test_sets(p, tmp_path, 521, ["sub-verse005"], real_name="real VerSe samples",
                                        validation_fallback=True)
    assert list(sets) == ["synthetic validation", "real VerSe samples"] and test_ids == ["b"]
    assert [workflow.set_key(n) for n in sets] == ["synthetic", "real"]
    sets, _ = workflow.test_sets(RecordingPipeline(tmp_path, test_ids=()), tmp_path, 501, [])
    assert sets == {}  # no fallback asked for: the caller decides what no test scans mean


@pytest.mark.parametrize("link", [False, True])
def test_collect_images_puts_every_test_image_in_one_folder(tmp_path, link):
    p = RecordingPipeline(tmp_path)
    sets, _ = workflow.test_sets(p, tmp_path, 501, ["sub-verse005"])
    dest = workflow.collect_images(sets, tmp_path / "all", link=link)
    assert sorted(f.name for f in dest.iterdir()) == ["c_0000.nii.gz", "sub-verse005_0000.nii.gz"]
    assert all(f.is_symlink() == link for f in dest.iterdir())


def test_predict_retries_scans_without_spine_with_the_heuristic_and_evaluate_per_set(tmp_path, capsys):
    p = RecordingPipeline(tmp_path)
    sets, _ = workflow.test_sets(p, tmp_path, 501, ["sub-verse005"])
    images = workflow.collect_images(sets, tmp_path / "all")
    pred = tmp_path / "pred"
    workflow.predict(p, images, pred, 501, "S", "predict student", spine_dataset_id=502, spine_trainer="SP")
    predicts = [c for c in p.calls if c[0] == "predict"]
    assert predicts == [("predict", "S", 502, True, "predict student"),
                        ("predict", "S", None, False, "predict student (heuristic spine)")]
    assert workflow.missing_predictions(images, pred) == []
    assert "1 scan(s) without result with the spine model" in capsys.readouterr().out

    rows = workflow.evaluate(p, sets, pred, tmp_path / "evaluation" / "student", "evaluate student")
    assert [(name, ev.name) for name, _, ev in rows] == [("synthetic test", "synthetic"), ("real samples", "real")]
    assert [c[2] for c in p.calls if c[0] == "evaluate"] == ["evaluate student synthetic", "evaluate student real"]


def test_step_headers(capsys):
    numbered, tagged = workflow.StepHeaders(total=2), workflow.StepHeaders(tag="study")
    numbered("one")
    numbered("two")
    tagged("three")
    assert capsys.readouterr().out.split("\n") == ["", "=== [1/2] one ===", "", "=== [2/2] two ===",
                                                    "[study] three", ""]
