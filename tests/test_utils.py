"""The one range parser of the command line (wavefront.utils.parse_range) and the point lists built on it."""
import pytest

from wavefront.errors import ConfigError
from wavefront.utils import parse_range, parse_values


def test_each_form_gives_low_high_and_step_in_the_scaled_unit():
    assert parse_range("f", "7") == (7.0, 7.0, None)
    assert parse_range("f", "25:300", scale=1e-9) == pytest.approx((25e-9, 300e-9, None))
    assert parse_range("f", "0:25:0.5") == (0.0, 25.0, 0.5)
    assert parse_values("snr_db", "0:30:5") == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
    assert parse_values("snr_db", "0:1:0.1")[-1] == 1.0  # the end is kept despite float steps
    assert parse_values("snr_db", "3,1,2") == [3.0, 1.0, 2.0]


@pytest.mark.parametrize("text,forms,minimum,rule", [
    ("a:b", "v,a:b", None, "must be v or a:b (numbers)"),
    ("x", "v,a:b,a:b:step", None, "must be v, a:b or a:b:step (numbers)"),
    ("1:2:3", "a:b", None, "must be a:b (numbers)"),
    ("5", "a:b", None, "must be a:b (numbers)"),
    ("nan:3", "a:b", None, "values must be finite"),
    ("1:inf", "a:b", None, "values must be finite"),
    ("30:0", "a:b", None, "needs low <= high"),
    ("0:30:0", "a:b:step", None, "the step must be > 0"),
    ("0:30:-5", "a:b:step", None, "the step must be > 0"),
    ("-50:100", "a:b", 0.0, "must be >= 0"),
])
def test_bad_ranges_name_the_field_the_text_and_the_rule(text, forms, minimum, rule):
    with pytest.raises(ConfigError) as exc:
        parse_range("prior.doppler_hz", text, forms, minimum=minimum)
    msg = str(exc.value)
    assert "prior.doppler_hz" in msg and text in msg and rule in msg


def test_point_lists_refuse_too_many_points_and_empty_lists():
    with pytest.raises(ConfigError, match="at most 1000 points"):
        parse_values("snr_db", "0:1000:0.5")
    with pytest.raises(ConfigError, match="at least one value"):
        parse_values("snr_db", ",")
    with pytest.raises(ConfigError, match=r"snr_db='0,10,10': repeats 10; give each point once"):
        parse_values("snr_db", "0,10,10")  # simulated twice into two rows of one table before


@pytest.mark.parametrize("text", ["0,nan", "inf", "5,-inf,10"])
def test_a_point_list_refuses_nan_and_inf_naming_the_field(text):
    # the list path, not only the range path: a NaN SNR point would run a whole sweep of NaN rows
    with pytest.raises(ConfigError, match=r"snr_db=.*values must be finite"):
        parse_values("snr_db", text)


def test_the_output_folder_check_refuses_a_need_beyond_the_free_space_and_accepts_one_within(tmp_path):
    import shutil

    from wavefront.utils import check_output_folder

    free = shutil.disk_usage(tmp_path).free
    assert check_output_folder("out", tmp_path / "new", need_bytes=1) == tmp_path / "new"
    with pytest.raises(ConfigError, match=r"out=.*not enough free space"):
        check_output_folder("out", tmp_path / "new", need_bytes=free * 1000)  # a thousand times the disk
    assert not (tmp_path / "new").exists()  # a check, not a mkdir: the refused path is left as it was


def test_refuse_to_replace_looks_for_every_name_not_only_the_first(tmp_path):
    from wavefront.utils import refuse_to_replace

    refuse_to_replace("out", tmp_path, ("results.json", "table.csv"), overwrite=False)  # empty folder: passes
    (tmp_path / "table.csv").write_text("x\n")
    with pytest.raises(ConfigError, match=r"holds results of an earlier run \(table.csv\)"):
        refuse_to_replace("out", tmp_path, ("results.json", "table.csv"), overwrite=False)
    refuse_to_replace("out", tmp_path, ("results.json", "table.csv"), overwrite=True)  # --overwrite: passes


def test_a_range_gives_exactly_max_points_and_its_points_are_the_decimal_values():
    assert len(parse_values("snr_db", "0:999:1")) == 1000  # "at most 1000": 1000 is allowed
    with pytest.raises(ConfigError, match="at most 1000 points"):
        parse_values("snr_db", "0:1000:1")
    # start + i * step in binary gives 0.30000000000000004 and 0.7000000000000001: rows and labels get the decimals
    assert parse_values("snr_db", "0:1:0.1") == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def test_read_text_file_names_a_missing_file_and_a_folder_each_with_its_own_rule(tmp_path):
    from wavefront.utils import read_text_file

    (tmp_path / "a.yaml").write_text("x: 1\n")
    assert read_text_file("config", tmp_path / "a.yaml", "no such file", "is a folder") == "x: 1\n"
    with pytest.raises(ConfigError, match=r"config=.*b.yaml.*: no such file"):
        read_text_file("config", tmp_path / "b.yaml", "no such file", "is a folder")
    with pytest.raises(ConfigError, match=r"config=.*: is a folder"):
        read_text_file("config", tmp_path, "no such file", "is a folder")


def test_atomic_csv_keeps_the_first_rows_column_order_and_every_row(tmp_path):
    import csv

    from wavefront.utils import atomic_write_csv

    rows = [{"snr_db": 0.0, "mse_db": -3.5, "bler": 1.0}, {"snr_db": 10.0, "mse_db": -12.25, "bler": 0.5}]
    path = atomic_write_csv(tmp_path / "t.csv", rows)
    with open(path, newline="") as f:
        back = list(csv.reader(f))
    assert back == [["snr_db", "mse_db", "bler"], ["0.0", "-3.5", "1.0"], ["10.0", "-12.25", "0.5"]]
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary file left beside it


def test_seed_int_takes_every_63_bit_seed_and_nothing_beyond():
    import argparse

    from wavefront.utils import derive_seed, seed_int

    assert seed_int("0") == 0 and seed_int("1e6") == 10 ** 6 and seed_int(str(2 ** 63 - 1)) == 2 ** 63 - 1
    # why the door: derive_seed keeps the low 64 bits, so 2**64 would draw seed 0's streams
    assert derive_seed(2 ** 64, 3) == derive_seed(0, 3)
    for bad in (str(2 ** 63), str(2 ** 64), "-1", "1e40"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"must be an integer in \[0, 2\*\*63\)"):
            seed_int(bad)
