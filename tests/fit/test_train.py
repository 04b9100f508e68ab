"""`lineside train` on a real station database → a new profile version → the running daemon swaps it in between
frames (file watch), with no frame lost and every frame decided by exactly one version; a broken version is
refused while the line goes on."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import pytest
import yaml

from edge.config import parse_config
from edge.daemon import Daemon
from edge.durable import write_atomic
from edge.profile.versions import current_version, load_profile
from edge.station.store import Store
from edge.tools.net import free_port
from edge.transport.schema import ReviewItem
from tests.conftest import line_config, run_lineside
from tests.ops.conftest import Running, wait_for

CLASS_SCORES = {"good": 0.6, "spot": 0.2, "texture": 0.1, "scratch": 0.05, "patch": 0.05}
OPERATOR_SAYS = {"nominal": "good", "local": "spot", "global": "texture"}


def _reviewed_station(workdir: Path, frames: Path, answered_good: frozenset[int] = frozenset()) -> int:
    """The station's SQLite file with every test frame reviewed: the daemon called them all good; the operator
    accepted the nominal ones and relabelled the defects (but accepted the items `answered_good` as well)."""
    store = Store(f"sqlite:///{workdir / 'station.db'}", workdir / "images")
    try:
        batch = []
        for seq, path in enumerate(sorted(frames.iterdir())):
            image = cv2.imread(str(path))
            ok, jpeg = cv2.imencode(".jpg", image)
            assert ok
            batch.append((ReviewItem(
                frame_id=f"test-line:cam0:earlier:{seq}", line_id="test-line", source_id="cam0", seq=seq,
                captured_wall=1000.0 + seq, decided_wall=1000.1 + seq, width=image.shape[1], height=image.shape[0],
                verdict="good", class_scores=CLASS_SCORES, anomaly_score=0.1, anomaly_threshold=0.5,
                uncertainty=0.45, reason="uncertain", regions=[], pack_version="p", profile_version="test-line@v0001"),
                jpeg.tobytes()))
        assert all(store.ingest.add_items(batch))
        for item_id, (item, _) in enumerate(batch, 1):
            label = sorted(frames.iterdir())[item.seq].stem.split("_")[1]
            answer = OPERATOR_SAYS[label]
            if answer == "good" or item_id in answered_good:
                store.reviews.add(item_id, "accept", "ana", now=2000.0 + item_id)
            else:
                store.reviews.add(item_id, "relabel", "ana", defect_class=answer, now=2000.0 + item_id)
        return len(batch)
    finally:
        store.close()


def test_reviews_retrain_the_profile_and_the_running_daemon_swaps_it_in(
        tmp_path: Path, textile_images: dict[str, Path], calibrated_profile: Path) -> None:
    shutil.copytree(calibrated_profile, tmp_path / "profile")
    config = line_config(tmp_path, textile_images["frames"], free_port(), free_port(),
                         ops={"reload_watch_s": 0.2})
    data = yaml.safe_load(config.read_text())
    data["line"]["source"].update(loop=True, fps=8)
    config.write_text(yaml.safe_dump(data))
    n_reviewed = _reviewed_station(tmp_path, textile_images["frames"])
    first = current_version(tmp_path / "profile")

    daemon = Daemon(parse_config(data, str(config), env={}).line)
    running = Running(daemon)
    try:
        wait_for(lambda: daemon.counters["frames"] >= 3, 60, "first frames")
        result = run_lineside("train", "--config", str(config), "--policy", "budget", "--budget", "0.3")
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"{n_reviewed} reviewed frames" in result.stdout
        second = current_version(tmp_path / "profile")
        assert second != first
        wait_for(lambda: daemon.counters["reloads"] == 1, 60, "the daemon to pick up the trained version")
        assert daemon.inspector.versions[1].endswith(str(second))
        n = daemon.counters["frames"]
        wait_for(lambda: daemon.counters["frames"] >= n + 3, 60, "frames on the trained version")

        # a version that is not there, written as every lineside tool writes CURRENT (atomically: write_text's
        # truncate-then-write can be seen twice by the 0.2 s watcher, two reloads, two failures)
        write_atomic(tmp_path / "profile" / "CURRENT", b"v9999\n")
        wait_for(lambda: daemon.counters["reload_failures"] == 1, 30, "the refused version")
        n = daemon.counters["frames"]
        wait_for(lambda: daemon.counters["frames"] >= n + 2, 60, "frames after the refused version")
        assert daemon.inspector.versions[1].endswith(str(second))
    finally:
        status = running.stop()

    # the next training, told nothing about routing, routes as the line engineer chose the last time
    write_atomic(tmp_path / "profile" / "CURRENT", f"{second}\n".encode())
    result = run_lineside("train", "--config", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "budget 30%" in result.stdout, result.stdout  # with a predictor or, until there is one, the one kept
    third = load_profile(tmp_path / "profile")
    assert third.version not in (first, second)
    assert third.metrics["routing_policy"] == {"policy": "budget", "alpha": 0.01, "delta": 0.1, "budget": 0.3}
    # and it reads what is new, not the station's history: the relabelled defects are in the last version's rows
    # with the same answers; the good frames are read again only because the line model learns from them
    n_good = sum("_nominal" in p.name for p in textile_images["frames"].iterdir())
    assert third.metrics["reviews_already_in_rows"] == n_reviewed - n_good
    assert third.metrics["reviewed_frames"] == n_good
    assert third.metrics["rows"] == load_profile_rows(tmp_path / "profile", str(second))

    trained = json.loads((tmp_path / "profile" / str(second) / "profile.json").read_text())
    assert trained["metrics"]["trained_from"] == first
    assert trained["metrics"]["reviewed_frames"] == n_reviewed
    assert trained["head"] is not None, "the reviewed defects give the profile a classifier head"
    assert trained["rows"]["n"] == load_profile_rows(tmp_path / "profile", str(first)) + n_reviewed

    decisions = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    seqs = [int(d["frame_id"].rsplit(":", 1)[1]) for d in decisions]
    assert seqs == list(range(len(decisions))), "no frame lost across the swaps"
    assert len(decisions) == status["frames"] and status["errors"] == 0
    profiles = [d["profile"] for d in decisions]
    old = profiles[0]
    assert old.endswith(str(first)) and profiles[-1].endswith(str(second))
    assert profiles == sorted(profiles, key=lambda p: p != old), "each frame decided by one version, old then new"
    assert status["reloads"] == 1 and status["reload_failures"] == 1


def load_profile_rows(profile_dir: Path, version: str) -> int:
    return int(json.loads((profile_dir / version / "profile.json").read_text())["rows"]["n"])


def test_train_says_what_is_missing_in_one_line(tmp_path: Path, textile_images: dict[str, Path],
                                                calibrated_profile: Path) -> None:
    shutil.copytree(calibrated_profile, tmp_path / "profile")
    config = line_config(tmp_path, textile_images["frames"], free_port(), free_port())
    Store(f"sqlite:///{tmp_path / 'station.db'}", tmp_path / "images").close()
    started = time.monotonic()
    result = run_lineside("train", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: line test-line: the station has no reviewed")
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 120
    assert load_profile(tmp_path / "profile").version == current_version(tmp_path / "profile")


def test_a_training_with_nothing_new_refits_on_the_rows_it_has(tmp_path: Path, calibrated_profile: Path) -> None:
    """The same reviews again (say, to route at another risk): nothing is read, the rows stay, a version is made."""
    from edge.bench.fit import reviewed_textile
    from edge.fit.refit import RoutingSpec
    from edge.fit.train import train_profile
    from edge.vlm.pack import load_pack
    from tests.conftest import PACK

    shutil.copytree(calibrated_profile, tmp_path / "profile")
    pack = load_pack(PACK)
    defects = [r for r in reviewed_textile(2000) if not r.is_good][:6]  # no good frames, no boxes: no line examples
    first = train_profile(pack, tmp_path / "profile", defects, provider="cpu")
    assert first.metrics["reviewed_frames"] == 6 and first.metrics["reviews_already_in_rows"] == 0
    again = train_profile(pack, tmp_path / "profile", defects, RoutingSpec("budget", budget=0.25), provider="cpu")
    assert again.metrics["reviewed_frames"] == 0 and again.metrics["reviews_already_in_rows"] == 6
    assert again.rows is not None and first.rows is not None and len(again.rows) == len(first.rows)
    assert again.metrics["routing_policy"]["budget"] == 0.25
    assert current_version(tmp_path / "profile") == again.version != first.version


def test_a_version_s_rows_keep_calibrate_s_and_the_latest_reviews(tmp_path: Path, calibrated_profile: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A line's reviews grow every day and the refit's time with its rows: a version keeps the latest reviews'
    rows (and all of calibrate's); older ones are neither kept nor read again at the next training."""
    from edge.bench.fit import reviewed_textile
    from edge.fit import train
    from edge.vlm.pack import load_pack
    from tests.conftest import PACK

    monkeypatch.setattr(train, "MAX_REVIEWS_IN_ROWS", 4)
    shutil.copytree(calibrated_profile, tmp_path / "profile")
    pack = load_pack(PACK)
    calibrated = load_profile(tmp_path / "profile", with_rows=True)
    assert calibrated.rows is not None
    defects = [r for r in reviewed_textile(2000) if not r.is_good][:6]  # oldest review first
    first = train.train_profile(pack, tmp_path / "profile", defects, provider="cpu")
    assert first.rows is not None and first.metrics["reviews_left_out"] == 2
    assert first.rows.sources == [""] * len(calibrated.rows) + [f"review:{r.frame_id}" for r in defects[2:]]
    again = train.train_profile(pack, tmp_path / "profile", defects, provider="cpu")
    assert again.metrics["reviewed_frames"] == 0, "the left-out reviews are not read back in"
    assert again.rows is not None and again.rows.sources == first.rows.sources
    # the station's retention deletes the four oldest: the rows of the two kept ones stay, there being room
    after_retention = train.train_profile(pack, tmp_path / "profile", defects[4:], provider="cpu")
    assert after_retention.rows is not None and after_retention.rows.sources == first.rows.sources
    assert after_retention.metrics["reviews_left_out"] == 0


def test_a_review_the_line_contradicts_is_named_by_its_console_item(tmp_path: Path, calibrated_profile: Path) -> None:
    """An operator answers a clear texture defect "good": the training lists that review first among the labels to
    check, by the console item where its answer can be given again."""
    import dataclasses

    from edge.bench.fit import reviewed_textile
    from edge.fit.train import train_profile
    from edge.vlm.pack import load_pack
    from tests.conftest import PACK

    shutil.copytree(calibrated_profile, tmp_path / "profile")
    every = reviewed_textile(400)
    reviews = [r for r in every if r.is_good][:30] + [r for r in every if r.final_verdict == "spot"][:10] + [
        r for r in every if r.final_verdict == "texture"][:10]
    slip = len(reviews) - 10
    reviews[slip] = dataclasses.replace(reviews[slip], final_verdict="good", defect_class=None, decision="accept")
    trained = train_profile(load_pack(PACK), tmp_path / "profile", reviews, provider="cpu")
    first = trained.metrics["label_suspects"][0]
    assert first == {"row": first["row"], "label": "good", "margin": first["margin"],
                     "frame": f"console item {reviews[slip].item_id} (review:{reviews[slip].frame_id})"}
    assert first["margin"] > 0
    assert trained.metrics["label_suspect_items"][0] == reviews[slip].item_id
    assert not any(s["frame"].startswith("review:") for s in trained.metrics["label_suspects"])


def test_train_recheck_sends_a_contradicted_review_back_to_the_queue(tmp_path: Path, textile_images: dict[str, Path],
                                                                     calibrated_profile: Path) -> None:
    """A texture defect accepted as good: `lineside train --recheck` trains, names it among the labels to check and
    puts it back in the station's queue, where the next answer replaces the wrong one."""
    shutil.copytree(calibrated_profile, tmp_path / "profile")
    config = line_config(tmp_path, textile_images["frames"], free_port(), free_port())
    frames = sorted(textile_images["frames"].iterdir())
    slip = next(i for i, p in enumerate(frames, 1) if "_global" in p.name)
    _reviewed_station(tmp_path, textile_images["frames"], frozenset({slip}))
    result = run_lineside("train", "--config", str(config), "--recheck")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"console item {slip} (review:" in result.stdout
    sent = next(line for line in result.stdout.splitlines() if line.startswith("recheck:"))
    assert str(slip) in sent.split("console items ")[1].split(", ")
    store = Store(f"sqlite:///{tmp_path / 'station.db'}", tmp_path / "images")
    try:
        assert store.queue.get_item(slip).status == "pending"
        assert [e.username for e in store.audit.recent(item_id=slip, action="recheck")] == ["lineside train"]
    finally:
        store.close()
