"""Checks shared by the MIMO sweep tests (Kronecker and DM-RS pilots)."""


def genie_on_bound_ls_above(res: dict, points: int) -> list[dict]:
    """Asserts that a sweep's ``lmmse-genie`` rows sit within 3 SE (+0.02 dB) of the bound at ``points`` points and
    that ``ls-linear`` is worse at each; returns the genie rows."""
    genie = [r for r in res["rows"] if r["estimator"] == "lmmse-genie"]
    ls = [r for r in res["rows"] if r["estimator"] == "ls-linear"]
    assert len(genie) == points
    for g, l in zip(genie, ls):
        assert abs(g["gap_db"]) < 3 * g["mse_se_db"] + 0.02, g
        assert l["mse_db"] > g["mse_db"]
    return genie
