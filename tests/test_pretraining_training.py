"""laser_fairseq/pretraining/training.py's process handling: signals to the driver reach the training
process, once or repeated, and the driver then stops with KeyboardInterrupt (its checkpoints stay for a
resume); the training run itself: tests/test_pretraining_run.py."""

import os
import signal
import subprocess
import sys
import time

import pytest

# a stand-in for fairseq-hydra-train: on SIGINT it takes a second to finish (as fairseq saving a checkpoint)
TRAINING = """
import signal, sys, time
stopping = []
signal.signal(signal.SIGINT, lambda *a: stopping.append(time.monotonic()))
print("training", flush=True)
while not stopping:
    time.sleep(0.01)
print(f"stopping after {len(stopping)} signal(s)", flush=True)
time.sleep(1.0)
print(f"stopped after {len(stopping)} signal(s)", flush=True)
sys.exit(130)
"""
DRIVER = """
import sys
from laser_fairseq.pretraining.training import run_training
try:
    run_training([sys.executable, "-c", sys.argv[1]], sys.argv[2])
except KeyboardInterrupt as stop:
    print(f"interrupted: {stop}", flush=True)
    sys.exit(3)
"""


@pytest.mark.parametrize("signals", [1, 2])
def test_signals_reach_the_training_process_and_end_the_run(tmp_path, signals):
    log = str(tmp_path / "train.log")
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, TRAINING, log], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (os.path.exists(log) and "\ntraining\n" in open(log).read()):  # printed, not in the command
        assert time.monotonic() < deadline and driver.poll() is None, "the training process did not start"
        time.sleep(0.02)
    for _ in range(signals):  # a second Ctrl-C while the first is being handled must not hang the driver
        driver.send_signal(signal.SIGINT)
        time.sleep(0.2)
    output, _ = driver.communicate(timeout=30)
    assert driver.returncode == 3 and "interrupted: stopped by signal 2; re-run the same command" in output
    text = open(log).read()
    assert "stopping after 1 signal(s)" in text and f"stopped after {signals} signal(s)" in text
