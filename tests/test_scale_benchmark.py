"""The scale benchmark's measurements at a tiny size: every stage runs, each stored byte is read once
per epoch (against twice when both passes read whole parts), and the table gives growth exponents."""

from benchmarks.scale import growth_exponent, measure_size, table


def test_the_scale_benchmark_measures_every_stage_and_reads_each_byte_once(tmp_path):
    results = {rows: measure_size(str(tmp_path), rows) for rows in (130, 260)}
    for figures in results.values():
        assert figures["bytes read / used"][0] == 1.0
        assert figures["bytes read / used, whole parts twice (before)"][0] == 2.0
        assert all(seconds > 0 for stage, (seconds, _) in figures.items() if not stage.startswith("bytes"))
    text = table(results)
    assert text.splitlines()[0] == "| stage | 130 rows | 260 rows | growth exponent |"
    assert "| epoch pass (read + decode) |" in text
    assert abs(growth_exponent([10, 100], [1.0, 10.0]) - 1.0) < 1e-9
