"""Energy helpers: RAPL counters (fake sysfs tree, wrap-around) and battery integration (units, sign, window)."""

import os

import pytest

from rmtkd_tf.bench.energy import (
    RAPL_GLOB,
    BatterySample,
    RaplMeter,
    RaplUnavailable,
    battery_conventions,
    charging_reason,
    detect_current_unit,
    detect_voltage_unit,
    integrate_battery_energy,
    rapl_delta_uj,
)


def make_rapl(root, name, energy_uj, max_uj, label="package-0"):
    domain = root / name
    domain.mkdir(parents=True)
    (domain / "energy_uj").write_text(f"{energy_uj}\n")
    (domain / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (domain / "name").write_text(f"{label}\n")
    return domain


# ----------------------------------------------------------------------------- RAPL


def test_rapl_is_unavailable_on_this_machine_with_a_reason():
    if RaplMeter.probe() is not None:
        pytest.skip("this host exposes readable RAPL counters")
    with pytest.raises(RaplUnavailable, match="RAPL"):
        RaplMeter.discover(RAPL_GLOB)


def test_rapl_delta_handles_wrap_around():
    assert rapl_delta_uj(100, 250, 1000) == 150
    assert rapl_delta_uj(900, 50, 1000) == 150
    assert rapl_delta_uj(0, 1000, 1000) == 1000
    with pytest.raises(ValueError, match="out of range"):
        rapl_delta_uj(10, 2000, 1000)
    with pytest.raises(ValueError, match="max_energy_range_uj"):
        rapl_delta_uj(1, 2, 0)


def test_rapl_meter_sums_packages_only_and_wraps(tmp_path):
    pkg0 = make_rapl(tmp_path, "intel-rapl:0", 262_143_000_000, 262_143_328_850)
    pkg1 = make_rapl(tmp_path, "intel-rapl:1", 5_000_000, 262_143_328_850, "package-1")
    make_rapl(tmp_path, "intel-rapl:0:0", 1, 10, "core")  # sub-domain: must not be double counted
    meter = RaplMeter.discover(str(tmp_path / "intel-rapl:*"))
    assert [d.name for d in meter.domains] == ["package-0", "package-1"]
    before = meter.read()
    (pkg0 / "energy_uj").write_text("1671150\n")  # wrapped: 328 850 uJ to the top + 1 671 150 after
    (pkg1 / "energy_uj").write_text("8000000\n")  # +3 J
    assert meter.joules_between(before, meter.read()) == pytest.approx(2.0 + 3.0)


def test_rapl_unreadable_counter_gives_reason(tmp_path):
    domain = make_rapl(tmp_path, "intel-rapl:0", 1, 10)
    os.remove(domain / "energy_uj")
    with pytest.raises(RaplUnavailable, match="not readable"):
        RaplMeter.discover(str(tmp_path / "intel-rapl:*"))


# ----------------------------------------------------------------------------- battery


def samples(times, current, voltage, status="Discharging", usb=False):
    return [BatterySample(t, c, v, status, usb) for t, c, v in zip(times, current, voltage)]


def test_units_detected_by_magnitude():
    assert detect_current_unit([-450_000, -520_000]) == "uA"
    assert detect_current_unit([450, 520]) == "mA"
    assert detect_current_unit([12_000]) == "uA"  # 12 mA in uA (12 A in mA is impossible)
    assert detect_voltage_unit([3_870_000]) == "uV"
    assert detect_voltage_unit([3870]) == "mV"
    assert detect_voltage_unit([3.87]) == "V"
    with pytest.raises(ValueError, match="not plausible"):
        detect_voltage_unit([0.01])


@pytest.mark.parametrize("current, voltage", [
    ([-500_000, -500_000, -1_000_000], [4_000_000] * 3),  # kernel ABI: uA, discharge negative
    ([500_000, 500_000, 1_000_000], [4_000_000] * 3),  # vendor: uA, discharge positive
    ([500, 500, 1000], [4000] * 3),  # mA / mV
    ([-500, -500, -1000], [4.0] * 3),  # mA / V
])
def test_integration_is_independent_of_units_and_sign(current, voltage):
    # 0.5 A for 1 s then ramp to 1 A over 1 s at 4 V: 2 J + (2+4)/2 J = 5 J
    energy = integrate_battery_energy(samples([0.0, 1.0, 2.0], current, voltage))
    assert energy.joules == pytest.approx(5.0)
    assert energy.seconds == 2.0 and energy.mean_power_w == pytest.approx(2.5)
    assert energy.num_samples == 3


def test_opposite_sign_sample_counts_as_charge_back_not_consumption():
    # Discharge negative; one sample at +0.5 A (charging blip) reduces the energy.
    energy = integrate_battery_energy(samples([0, 1, 2, 3], [-1_000_000, -1_000_000, 500_000, -1_000_000], [4_000_000] * 4))
    # power: 4, 4, -2, 4 W -> trapezoid 4 + 1 + 1 = 6 J
    assert energy.joules == pytest.approx(6.0)
    assert energy.discharge_sign == -1


def test_window_is_interpolated_at_the_edges():
    # Power ramps 0 -> 10 W linearly over 10 s (1 V, current 0..10 A in mA).
    times = [0.0, 5.0, 10.0]
    energy = integrate_battery_energy(samples(times, [1, 5000, 10000], [1.0] * 3), t_start=2.0, t_end=8.0)
    assert energy.joules == pytest.approx((2.0 + 8.0) / 2 * 6.0, rel=1e-3)
    assert energy.seconds == 6.0 and energy.num_samples == 1
    with pytest.raises(ValueError, match="outside the sampled span"):
        integrate_battery_energy(samples(times, [1000] * 3, [1.0] * 3), t_start=-1.0)
    with pytest.raises(ValueError, match="empty"):
        integrate_battery_energy(samples(times, [1000] * 3, [1.0] * 3), t_start=5.0, t_end=5.0)


def test_fixed_conventions_apply_to_a_sub_series():
    idle = samples([0, 1], [9_000, 9_000], [4_000_000] * 2)  # 9 mA in uA would look like mA on its own
    run = samples([2, 3], [900_000, 900_000], [4_000_000] * 2)
    conventions = battery_conventions(idle + run)
    assert conventions["current_unit"] == "uA"
    assert integrate_battery_energy(idle, conventions=conventions).mean_power_w == pytest.approx(0.036)


def test_bad_battery_series():
    with pytest.raises(ValueError, match="at least 2"):
        integrate_battery_energy(samples([0], [1000], [4000]))
    with pytest.raises(ValueError, match="backwards"):
        integrate_battery_energy(samples([1, 0], [1000, 1000], [4000, 4000]))
    with pytest.raises(ValueError, match="median battery current is 0"):
        integrate_battery_energy(samples([0, 1], [0, 0], [4000, 4000]))


def test_charging_detection():
    assert charging_reason(samples([0, 1], [1, 1], [4, 4])) is None
    assert "Charging" in charging_reason(samples([0, 1], [1, 1], [4, 4], status="Charging"))
    assert "Full" in charging_reason(samples([0, 1], [1, 1], [4, 4], status="Full"))
    assert "USB power was online" in charging_reason(samples([0, 1], [1, 1], [4, 4], usb=True))
    assert charging_reason(samples([0, 1], [1, 1], [4, 4], status="Not charging")) is None
