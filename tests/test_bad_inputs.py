"""Every number of every command is checked at the door: NaN, inf, words and fractions are one line, exit 2.

A table over all commands (sweep, evaluate, train, generate, generate-suite, import-mat,
export-mat, audit, pilots, codesign, merge-results): each bad value must give exit code 2,
exactly one line on stderr naming the option, no traceback, and nothing written.
"""
import pytest

from wavefront.cli import main

# command prefix (the required arguments, {tmp} = the test's folder) -> its number options
NUMBER_OPTIONS = {
    ("sweep", "--out", "{tmp}/o"): {
        "float": ["--ldpc-rate"],
        "int": ["--frames", "--min-bit-errors", "--batch-size", "--seed", "--threads"],
        "values": ["--snr-db", "--doppler-hz", "--delay-spread-ns"],
        "range": ["--prior-snr-db", "--prior-delay-spread-ns", "--prior-doppler-hz"],
    },
    ("evaluate", "--checkpoint", "adafortitran", "--device", "cpu", "--out", "{tmp}/o"): {
        "int": ["--frames-per-point", "--seed"],
        "range": ["--prior-snr-db", "--prior-delay-spread-ns", "--prior-doppler-hz"],
    },
    ("train", "--on-the-fly", "default", "--out", "{tmp}/o"): {
        "float": ["--lr", "--weight-decay", "--grad-clip", "--time-limit-min"],
        "int": ["--steps", "--epochs", "--batch-size", "--warmup-steps", "--eval-every", "--val-frames", "--patience",
                "--seed", "--workers", "--stop-after"],
    },
    ("generate", "--frames", "10", "--out", "{tmp}/o"): {
        "int": ["--frames", "--shard-frames", "--seed", "--batch-size", "--threads"],
    },
    ("generate-suite", "adafortitran", "--out", "{tmp}/o"): {
        "int": ["--frames-per-point", "--shard-frames", "--seed", "--batch-size", "--threads"],
    },
    ("import-mat", "--mat", "{tmp}", "--out", "{tmp}/o"): {"int": ["--shard-frames"]},
    ("audit", "{tmp}"): {"float": ["--tolerance-db"], "int": ["--groups", "--threads"]},
    ("pilots", "optimise", "--num-pilots", "24", "--out", "{tmp}/o"): {
        "int": ["--num-pilots", "--radius-f", "--radius-t", "--max-passes", "--seed"],
        "range": ["--doppler-hz", "--delay-spread-ns", "--snr-db"],
    },
    ("codesign", "layout", "--out", "{tmp}/o"): {
        "int": ["--epochs", "--seeds", "--image-size", "--train-images", "--val-images", "--test-images", "--threads"],
    },
    ("codesign", "receivers", "--out", "{tmp}/o"): {
        "float": ["--noise"],
        "int": ["--receivers", "--epochs", "--seeds", "--train-shots", "--val-shots", "--test-shots", "--threads"],
    },
    ("codesign", "receivers", "--velocity", "{tmp}/v.npy", "--out", "{tmp}/o"): {
        "float": ["--dx", "--dt", "--min-spacing"],
        "int": ["--nt", "--num-receivers", "--seed", "--threads", "--restarts"],
    },
}
BAD_VALUES = {
    "float": ["nan", "inf", "-inf", "1e400", "abc"],
    "int": ["nan", "inf", "abc", "1.5"],
    "values": ["nan", "inf", "0:inf:5", "nan,1"],
    "range": ["nan:1", "0:inf", "abc"],
}


def _number_cases():
    for prefix, kinds in NUMBER_OPTIONS.items():
        for kind, options in kinds.items():
            for option in options:
                for value in BAD_VALUES[kind]:
                    yield pytest.param([*prefix, option, value], option.lstrip("-").replace("-", "_"),
                                       id=f"{' '.join(prefix[:2])} {option} {value}")


# Bad input beyond one number: (argv, what the one line must say).
SPECIAL = [
    (["train", "--on-the-fly", "default", "--grad-clip", "nan", "--out", "{tmp}/o"], "grad_clip=nan"),
    (["train", "--on-the-fly", "default", "--time-limit-min", "nan", "--out", "{tmp}/o"], "time_limit_min=nan"),
    (["train", "--on-the-fly", "default", "--weight-decay", "nan", "--out", "{tmp}/o"], "weight_decay=nan"),
    (["train", "--on-the-fly", "default", "--grad-clip", "-1", "--out", "{tmp}/o"], "grad_clip=-1"),
    (["train", "--on-the-fly", "default", "--lr", "0", "--out", "{tmp}/o"], "lr=0"),
    (["sweep", "--batch-size", "1e8", "--frames", "1e8", "--out", "{tmp}/o"], "batch_size=100000000: needs about"),
    (["generate", "--frames", "1e12", "--batch-size", "1e9", "--out", "{tmp}/o"], "shards"),
    (["generate", "--frames", "1e7", "--batch-size", "1e9", "--out", "{tmp}/o"], "batch_size=1000000000: needs about"),
    (["generate", "--frames", "1e9", "--shard-frames", "1e9", "--out", "{tmp}/o"], "shard_frames=1000000000"),
    (["generate-suite", "adafortitran", "--frames-per-point", "0", "--out", "{tmp}/o"], "frames_per_point=0"),
    (["generate-suite", "adafortitran", "--frames-per-point", "1e12", "--out", "{tmp}/o"], "frames_per_point="),
    (["audit", "{tmp}", "--json", "{tmp}"], "json='{tmp}': is a folder"),
    (["sweep", "--frames", "10", "--out", "/proc/x"], "out='/proc/x': cannot be written"),
    (["evaluate", "--checkpoint", "adafortitran", "--out", "/proc/x"], "out='/proc/x': cannot be written"),
    (["train", "--on-the-fly", "default", "--steps", "1", "--out", "/proc/x"], "out='/proc/x': cannot be written"),
    (["generate", "--frames", "10", "--out", "/proc/x"], "out='/proc/x': cannot be written"),
    (["generate-suite", "adafortitran", "--out", "/proc/x"], "out='/proc/x': cannot be written"),
    (["export-mat", "--data", "{tmp}", "--out", "/proc/x"], "out='/proc/x': cannot be written"),
    (["import-mat", "--mat", "{tmp}", "--out", "/proc/x"], "out='/proc/x': cannot be written"),
    (["pilots", "optimise", "--num-pilots", "24", "--out", "/proc/x"], "out='/proc/x': cannot be written"),
    (["codesign", "layout", "--out", "/proc/x"], "out='/proc/x': cannot be written"),
    (["codesign", "receivers", "--out", "/proc/x"], "out='/proc/x': cannot be written"),
    (["merge-results", "/proc/x", "{tmp}"], "out='/proc/x': cannot be written"),
    (["audit", "{tmp}", "--json", "/proc/x/report.json"], "json='/proc/x': cannot be written"),
    # the bad-input audit: each was a traceback (or a silent hour) before its check
    (["sweep", "--ici", "--doppler-hz", "1e9", "--frames", "4", "--out", "{tmp}/o"],
     "channel.doppler_hz=1000000000.0: with channel.ici (the time-domain path) the Doppler must be <= the subcarrier "
     "spacing, 15000 Hz"),
    (["sweep", "--prior-doppler-hz", "0:1e9", "--estimators", "lmmse-estimated", "--frames", "2", "--out", "{tmp}/o"],
     "prior.doppler_hz=[0.0, 1000000000.0]: spans 20000001 grid points at the 50 step; at most 1000 per axis"),
    (["sweep", "--ici", "--prior-doppler-hz", "0:1e5", "--estimators", "lmmse-estimated", "--frames", "2", "--out",
      "{tmp}/o"], "prior.doppler_hz=[0.0, 100000.0]: with channel.ici"),
    (["generate", "--frames", "2", "--threads", "1e6", "--out", "{tmp}/o"], "threads=1000000: must be at most"),
    (["sweep", "--frames", "2", "--threads", "1e6", "--out", "{tmp}/o"], "threads=1000000: must be at most"),
    (["train", "--on-the-fly", "default", "--set", "model_dim=-1", "--steps", "1", "--out", "{tmp}/o"],
     "model_dim=-1: the model cannot be built with this value (ConfigError: num_heads=4: must divide model_dim=-1)"),
    (["codesign", "layout", "--threads", "1e6", "--out", "{tmp}/o"], "threads=1000000: must be at most"),
    (["train", "--on-the-fly", "default", "--batch-size", "1e9", "--steps", "1", "--out", "{tmp}/o"],
     "batch_size=1000000000: needs about"),
    (["train", "--on-the-fly", "default", "--val-frames", "1e9", "--batch-size", "2", "--steps", "1", "--out", "{tmp}/o"],
     "val_frames=1000000000: needs about"),
    (["codesign", "layout", "--image-size", "1e6", "--out", "{tmp}/o"], "image_size=1000000: needs about"),
    (["codesign", "layout", "--train-images", "1e9", "--out", "{tmp}/o"], "train_images=1000000000: needs about"),
    (["codesign", "receivers", "--train-shots", "1e9", "--out", "{tmp}/o"], "train_shots=1000000000: needs about"),
    (["leaderboard", "--models", "", "--out", "{tmp}/o"], "models='': name at least one registered model"),
    (["train", "--on-the-fly", "default", "--set", "patch_size=[3", "--steps", "1", "--out", "{tmp}/o"],
     "--set='patch_size=[3': the value is not valid YAML (ParserError)"),
    (["evaluate", "--checkpoint", "adafortitran", "--suite", "{tmp}/nope", "--out", "{tmp}/o"],
     "suite='{tmp}/nope': no such folder"),
    (["pilots", "optimise", "--num-pilots", "24", "--radius-f", "1e9", "--out", "{tmp}/o"],
     "radius_f=1000000000: must be <= 119: a move cannot reach beyond the grid's 120 subcarriers"),
    (["pilots", "optimise", "--num-pilots", "24", "--radius-t", "14", "--out", "{tmp}/o"], "radius_t=14: must be <= 13"),
    (["sweep", "--rank", "nan", "--world", "2", "--out", "{tmp}/o"], "rank=nan"),
    (["sweep", "--rank", "0", "--world", "inf", "--out", "{tmp}/o"], "world=inf"),
    # a seed keeps its low 64 bits in derive_seed (2**64 drew seed 0's frames) and overflows torch.manual_seed
    (["sweep", "--seed", str(2 ** 64), "--frames", "2", "--out", "{tmp}/o"], f"seed={2 ** 64}: must be an integer in "
                                                                               "[0, 2**63)"),
    (["sweep", "--seed", str(2 ** 63), "--frames", "2", "--out", "{tmp}/o"], f"seed={2 ** 63}: must be"),
    (["train", "--on-the-fly", "default", "--steps", "1", "--seed", str(2 ** 64), "--out", "{tmp}/o"],
     f"seed={2 ** 64}: must be an integer in [0, 2**63)"),
    (["evaluate", "--baselines-only", "--seed", "1e40", "--out", "{tmp}/o"], f"seed={10 ** 40}: must be an integer"),
    (["evaluate", "--baselines-only", "--seed", "-1", "--out", "{tmp}/o"], "seed=-1: must be an integer in [0, 2**63)"),
    (["codesign", "layout", "--seeds", "0", str(2 ** 64), "--out", "{tmp}/o"], f"seeds={2 ** 64}: must be an integer"),
    (["codesign", "receivers", "--seeds", "-1", "--out", "{tmp}/o"], "seeds=-1: must be an integer in [0, 2**63)"),
    # --workers 1000 started a thousand DataLoader processes on 2 CPUs
    (["train", "--on-the-fly", "default", "--steps", "1", "--workers", "1e3", "--out", "{tmp}/o"],
     "workers=1000: must be at most"),
    # flags that would be recorded and do nothing
    (["train", "--on-the-fly", "default", "--workers", "2", "--steps", "1", "--out", "{tmp}/o"],
     "workers=2: are DataLoader processes reading --train DIR"),
    (["train", "--on-the-fly", "default", "--val", "{tmp}", "--val-frames", "64", "--steps", "1", "--out", "{tmp}/o"],
     "val_frames=64: counts simulated validation frames, and --val DIR gives its own"),
    (["sweep", "--estimators", "ls-linear", "--robust-pdp", "exponential", "--frames", "2", "--out", "{tmp}/o"],
     "robust_pdp='exponential': shapes lmmse-robust, which is not among --estimators"),
    (["sweep", "--estimators", "ls-linear,mmse-bayes", "--robust-covariance", "prior-average", "--frames", "2",
      "--out", "{tmp}/o"], "robust_covariance='prior-average': shapes lmmse-robust"),
    # leaderboard's counts were plain int: "argument --seeds: invalid int value: 'nan'", and 1e3 refused
    (["leaderboard", "--models", "linear", "--seeds", "nan", "--out", "{tmp}/o"], "seeds=nan: must be a finite number"),
    (["leaderboard", "--models", "linear", "--steps", "1.5", "--out", "{tmp}/o"], "steps=1.5: must be a whole number"),
    (["leaderboard", "--models", "linear", "--batch-size", "0", "--out", "{tmp}/o"], "batch_size=0: must be a positive"),
    # flags the SISO path never reads were silently dropped (sweep ran single-antenna TDL-A frames)
    (["sweep", "--antenna-spacing", "2", "--frames", "2", "--out", "{tmp}/o"],
     "antenna_spacing=2.0: spaces the base station's antennas for --spatial rays, and this config has one antenna"),
    (["sweep", "--spatial", "rays", "--profile", "CDL-A", "--frames", "2", "--out", "{tmp}/o"],
     "spatial='rays': places a CDL profile's rays on the base station's antennas, and this config has one antenna"),
    (["generate", "--frames", "2", "--antenna-spacing", "0.7", "--out", "{tmp}/o"], "antenna_spacing=0.7: spaces"),
]


def _run(argv, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    before = sorted(tmp_path.rglob("*"))
    rc = main([*argv, "--no-progress"] if argv[0] not in ("codesign", "merge-results", "evaluate") else argv)
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert sorted(tmp_path.rglob("*")) == before  # refused before anything was written
    return err


@pytest.mark.parametrize("argv,field", list(_number_cases()))
def test_a_bad_number_is_one_line_naming_the_option_and_exit_2(argv, field, tmp_path, capsys):
    err = _run(argv, tmp_path, capsys)
    assert field in err or field.split("_")[0] in err, err


@pytest.mark.parametrize("argv,says", SPECIAL, ids=[" ".join(a[:1] + a[a.index(a[-2]):]) if len(a) > 2 else a[0]
                                                    for a, _ in SPECIAL])
def test_bad_input_beyond_numbers_is_one_line_and_exit_2(argv, says, tmp_path, capsys):
    err = _run(argv, tmp_path, capsys)
    assert says.replace("{tmp}", str(tmp_path)) in err, err


def test_the_table_covers_at_least_150_cases():
    assert len(list(_number_cases())) + len(SPECIAL) >= 150
