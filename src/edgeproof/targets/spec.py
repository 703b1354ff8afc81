"""The board model: CPU, accelerator, memory, power modes, thermal and jitter, each figure with a source."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeproof.errors import TargetError

PRECISIONS = ("fp32", "fp16", "int8", "int16")
# Operation classes whose speed a runtime reaches differently (see simulate.kernels.Kernel.board_class).
OP_CLASSES = ("conv", "conv-depthwise", "conv-pointwise", "gemm", "elementwise", "pool", "layout", "norm")


def _check_class_efficiency(value: dict[str, float]) -> dict[str, float]:
    """Keys are ``<class>`` or ``<class>@<precision>``; values are fractions in (0, 1]."""
    for key, frac in value.items():
        cls, _, precision = key.partition("@")
        if cls not in OP_CLASSES or (precision and precision not in PRECISIONS):
            raise ValueError(f"class_efficiency key {key!r}: use <class> or <class>@<precision>, classes {list(OP_CLASSES)}")
        if not 0 < frac <= 1:
            raise ValueError(f"class_efficiency {key!r} = {frac}: must be in (0, 1]")
    return value


def _efficiency_for(table: dict[str, float], default: float, op_class: str, precision: str) -> float:
    return table.get(f"{op_class}@{precision}", table.get(op_class, default))


class FrozenSpec(BaseModel):
    """Base of every spec: unknown fields are errors (a typo never passes silently), values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CpuSpec(FrozenSpec):
    """The application CPU that runs whatever the accelerator does not (or everything, without one)."""

    name: str
    cores: int = Field(gt=0)
    max_clock_ghz: float = Field(gt=0)
    # Arithmetic operations per cycle per core (an FMA counts 2), by precision.
    ops_per_cycle_per_core: dict[str, float]
    # Fraction of peak (and of memory bandwidth) an inference runtime reaches on typical layers,
    # and per operation class (optionally per precision: "conv@int8") where that differs.
    efficiency: float = Field(gt=0, le=1)
    class_efficiency: dict[str, float] = Field(default_factory=dict)
    # Extra speed of each added thread, as a fraction of the first (1.0 = perfect scaling).
    parallel_efficiency: float = Field(gt=0, le=1)
    # Dispatch cost of one kernel at max clock.
    op_overhead_us: float = Field(ge=0)

    @field_validator("ops_per_cycle_per_core")
    @classmethod
    def _fp32_present(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(PRECISIONS)
        if unknown:
            raise ValueError(f"unknown precision(s) {sorted(unknown)}; use {list(PRECISIONS)}")
        if "fp32" not in value:
            raise ValueError("fp32 rate is required (other precisions fall back to it)")
        return value

    @field_validator("class_efficiency")
    @classmethod
    def _classes(cls, value: dict[str, float]) -> dict[str, float]:
        return _check_class_efficiency(value)

    def efficiency_for(self, op_class: str, precision: str) -> float:
        """Fraction of peak the runtime reaches on ``op_class`` at ``precision``."""
        return _efficiency_for(self.class_efficiency, self.efficiency, op_class, precision)

    def peak_gops(self, precision: str, clock_ghz: float, threads: int) -> float:
        """Peak giga-operations per second with ``threads`` busy cores at ``clock_ghz``."""
        per_cycle = self.ops_per_cycle_per_core.get(precision, self.ops_per_cycle_per_core["fp32"])
        scale = 1.0 + (threads - 1) * self.parallel_efficiency
        return per_cycle * clock_ghz * scale


class OpSupport(FrozenSpec):
    """Which ONNX op types the accelerator runs at one precision: a list, or everything but a list."""

    ops: list[str] = Field(default_factory=list)
    all_except: list[str] | None = None

    def supports(self, op_type: str) -> bool:
        if self.all_except is not None:
            return op_type not in self.all_except
        return op_type in self.ops


class AcceleratorSpec(FrozenSpec):
    """An NPU/GPU/TPU: peak rate per precision, op support, memory and link to the host CPU."""

    name: str
    kind: Literal["integrated", "discrete"]
    clock_mhz: float = Field(gt=0)
    # Tera-operations per second at clock_mhz with all units on (dense, an FMA counts 2).
    peak_tops: dict[str, float]
    efficiency: float = Field(gt=0, le=1)
    # Per operation class (optionally "<class>@<precision>"), where the compiler's reach differs.
    class_efficiency: dict[str, float] = Field(default_factory=dict)
    ops: dict[str, OpSupport]
    # An op the accelerator lacks at a node's precision but has at the promoted one runs there at
    # that precision (TensorRT runs a layer without an INT8 kernel in FP16) instead of on the CPU.
    promote: dict[str, str] = Field(default_factory=dict)
    # The compiler maps only the first contiguous supported subgraph; all after it runs on the CPU.
    single_segment: bool = False
    activation_bandwidth_gbs: float = Field(gt=0)
    weight_bandwidth_gbs: float = Field(gt=0)
    # The compiler caches the first weight_cache_mib of weights (in execution order) on chip; the
    # rest is streamed again every inference at weight_spill_bandwidth_gbs, one transfer per layer.
    weight_cache_mib: float | None = None
    weight_spill_bandwidth_gbs: float | None = None
    # Activations beyond this do not fit (the model cannot run as compiled).
    activation_memory_mib: float | None = None
    transfer_bandwidth_gbs: float = Field(gt=0)
    transfer_latency_us: float = Field(ge=0)
    launch_overhead_us: float = Field(ge=0)
    kernel_overhead_us: float = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> AcceleratorSpec:
        for key in list(self.peak_tops) + list(self.ops):
            if key not in PRECISIONS:
                raise ValueError(f"unknown precision {key!r}; use {list(PRECISIONS)}")
        missing = set(self.ops) - set(self.peak_tops)
        if missing:
            raise ValueError(f"op support given for {sorted(missing)} but no peak_tops for it")
        for low, high in self.promote.items():
            if low not in self.ops or high not in self.ops:
                raise ValueError(f"promote {low!r} -> {high!r}: both precisions need op support")
        if self.weight_cache_mib is not None and self.weight_spill_bandwidth_gbs is None:
            raise ValueError("weight_cache_mib needs weight_spill_bandwidth_gbs")
        _check_class_efficiency(self.class_efficiency)
        return self

    def efficiency_for(self, op_class: str, precision: str) -> float:
        """Fraction of peak the accelerator reaches on ``op_class`` at ``precision``."""
        return _efficiency_for(self.class_efficiency, self.efficiency, op_class, precision)

    def run_precision(self, op_type: str, precision: str) -> str | None:
        """The precision the accelerator runs ``op_type`` in for a node of ``precision``, or None
        when the op falls back to the CPU."""
        support = self.ops.get(precision)
        if support is not None and support.supports(op_type):
            return precision
        promoted = self.promote.get(precision)
        if promoted is not None and self.ops[promoted].supports(op_type):
            return promoted
        return None


class MemorySpec(FrozenSpec):
    ram_mib: float = Field(gt=0)
    bandwidth_gbs: float = Field(gt=0)
    storage: str
    storage_read_mbs: float = Field(gt=0)
    # Memory the runtime itself holds besides the model (interpreter, allocator, libraries).
    runtime_overhead_mib: float = Field(ge=0)
    runtime_init_ms: float = Field(ge=0)
    # Weights are read in place from flash (microcontrollers) instead of being loaded into RAM.
    weights_in_place: bool = False


class PowerMode(FrozenSpec):
    """A named operating point: clocks, online cores and power draw at that point."""

    cpu_clock_ghz: float = Field(gt=0)
    cpu_cores: int = Field(gt=0)
    accel_clock_mhz: float | None = None
    # Fraction of accelerator compute units powered on (e.g. GPU TPCs gated in a low-power mode).
    accel_units_frac: float = Field(default=1.0, gt=0, le=1)
    memory_bandwidth_gbs: float | None = None
    idle_w: float = Field(ge=0)
    # Extra watts with every online core busy, at this mode's clock.
    cpu_dynamic_w: float = Field(ge=0)
    # Extra watts with the accelerator busy, at this mode's clock.
    accel_dynamic_w: float = Field(default=0.0, ge=0)
    power_cap_w: float | None = None


class ThermalSpec(FrozenSpec):
    """Lumped RC model of the package and its heatsink: dT/dt = (P - (T - T_amb)/R) / C."""

    cooling: Literal["passive", "active", "none"]
    r_th_c_per_w: float = Field(gt=0)
    c_th_j_per_c: float = Field(gt=0)
    ambient_c: float
    max_junction_c: float
    # Extra idle (leakage) power per °C above 25 °C.
    leakage_w_per_c: float = Field(ge=0)


class JitterSpec(FrozenSpec):
    """Latency noise: sample = base × session factor × lognormal(sigma) + occasional spikes.

    The session factor is lognormal(session_sigma), drawn once per simulated session; a spike
    (interrupt, scheduler preemption) is added with probability spike_prob and is exponentially
    distributed with mean spike_ms.
    """

    sigma: float = Field(ge=0)
    session_sigma: float = Field(ge=0)
    spike_prob: float = Field(ge=0, le=1)
    spike_ms: float = Field(ge=0)


class ProfileValidation(FrozenSpec):
    """How the profile's latency compares with published figures for the board (the fit that set
    its class efficiencies, and the rows held out from it). Errors are |predicted/published - 1|."""

    source: str
    fitted_on: str
    rows: int = Field(ge=0)
    fit_rows: int = Field(ge=0)
    held_out_rows: int = Field(ge=0)
    held_out_median_abs_error: float | None = None
    held_out_max_abs_error: float | None = None
    leave_one_model_out_median_abs_error: float | None = None
    # Relative half-width of the interval shown beside a simulated latency: the error within which
    # 90% of this board's held-out and leave-one-model-out predictions fell.
    interval_rel: float = Field(gt=0)
    free_parameters: list[str] = Field(default_factory=list)


class Target(FrozenSpec):
    """One board from the catalog. Every board is a simulated profile built from public specs."""

    id: str
    name: str
    version: str
    simulated: bool = True
    description: str = ""
    cpu: CpuSpec
    accelerator: AcceleratorSpec | None = None
    memory: MemorySpec
    power_modes: dict[str, PowerMode]
    default_power_mode: str
    thermal: ThermalSpec
    jitter: JitterSpec
    # Dynamic power scales with clock^dvfs_exponent when a governor or cap lowers the clock.
    dvfs_exponent: float = Field(gt=0)
    boot_s: float = Field(ge=0)
    sources: dict[str, str]
    validation: ProfileValidation | None = None
    file: str = ""

    @model_validator(mode="after")
    def _modes(self) -> Target:
        if not self.power_modes:
            raise ValueError("at least one power mode is required")
        if self.default_power_mode not in self.power_modes:
            raise ValueError(f"default_power_mode {self.default_power_mode!r} is not one of {sorted(self.power_modes)}")
        for name, mode in self.power_modes.items():
            if mode.cpu_cores > self.cpu.cores:
                raise ValueError(f"power_modes.{name}.cpu_cores {mode.cpu_cores} exceeds cpu.cores {self.cpu.cores}")
            if (mode.accel_clock_mhz is None) != (self.accelerator is None):
                raise ValueError(f"power_modes.{name}.accel_clock_mhz must be given exactly when the board has an accelerator")
        return self

    def mode(self, name: str | None) -> tuple[str, PowerMode]:
        """The named power mode (or the default), as (name, mode)."""
        key = name or self.default_power_mode
        if key not in self.power_modes:
            raise TargetError(f"target {self.id!r} has no power mode {key!r}; it has {sorted(self.power_modes)}")
        return key, self.power_modes[key]
