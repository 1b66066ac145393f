"""check-gpu's training-step rows, per model at its CUB settings:

- the authors' way: the eager fp32 NCHW step with the reference ops — images/s, peak memory, the
  gradients every other step is compared with, and the same step in eager bf16 autocast
  (channels_last) whose gradient error is the yardstick of bf16's own rounding;
- ours: the compiled bf16 channels_last step with the Triton kernels — its first step's
  gradients and loss terms against the eager fp32 step (``kernel_cases.train_step_bound``),
  images/s, peak memory, the graphs compiled, and the speed-up over the authors' way.

Both start from the same random weights (no download) and batch; ``model.drop_prob = 1`` so
that the dropped set does not depend on the draw (Philox in the kernels, ``torch.rand`` in the
reference: a mask equal to its own reference only in distribution), which the Philox
correctness row checks on its own. The CPU dry run stands ``vgg_small`` at 32² in for both
models and compiles with ``aot_eager`` (Inductor's CPU code generation takes minutes)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from fastwsol import kernel_cases
from fastwsol.check_gpu.runner import Settings
from fastwsol.objective import LOSS_TERMS

CLASSES = 200  # CUB


@dataclass(frozen=True)
class TrainCase:
    config: str  # the shipped config whose settings the step trains with
    model: str
    image_size: int
    batch: int
    steps: int  # timed steps


def train_cases(settings: Settings) -> dict[str, TrainCase]:
    if settings.on_gpu:
        cases = {"vgg16-cub": TrainCase("cub_vgg16", "vgg16", 224, 32, 10),
                 "resnet50-cub": TrainCase("cub_resnet50", "resnet50", 224, 32, 10)}
    else:
        cases = {"vgg16-cub": TrainCase("cub_vgg16", "vgg_small", 32, 2, 1),
                 "resnet50-cub": TrainCase("cub_resnet50", "vgg_small", 32, 2, 1)}
    return dict(list(cases.items())[:1]) if settings.quick else cases


def case_config(case: TrainCase, *, compiled: bool, backend: str, precision: str, channels_last: bool):
    from fastwsol.config import load_config

    return load_config(case.config, [
        f"model.name={case.model}", "model.pretrained=null", "model.drop_prob=1.0", f"train.compile={compiled}",
        f"train.backend={backend}", f"train.precision={precision}", f"train.channels_last={channels_last}",
    ])


def initial_state(case: TrainCase) -> dict:
    """The weights (CPU) and the uint8 batch every step of this case starts from."""
    from fastwsol.models import model_from_config

    config = case_config(case, compiled=False, backend="reference", precision="fp32", channels_last=False)
    torch.manual_seed(0)
    model = model_from_config(config, CLASSES, load_weights=False)
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (case.batch, 3, case.image_size, case.image_size), dtype=torch.uint8,
                           generator=generator)
    labels = torch.randint(0, CLASSES, (case.batch,), generator=generator)
    return {"weights": model.state_dict(), "images": images, "labels": labels}


def build_model(config, start: dict, device: str):
    from fastwsol.models import model_from_config

    model = model_from_config(config, CLASSES, load_weights=False)
    model.load_state_dict(start["weights"])
    model = model.to(device).train()
    return model.to(memory_format=torch.channels_last) if config.train.channels_last else model


def _synchronize(settings: Settings) -> None:
    if settings.on_gpu:
        torch.cuda.synchronize()


def _first_step(settings: Settings, model, config, start: dict, compiler: str = "inductor"):
    """(step, loss terms [total, ce, drop, sim, norm], gradients by name on the CPU, seconds) of
    one step from the start weights."""
    from fastwsol.train import TrainStep

    step = TrainStep(model, model.fc.weight, config, uint8_input=True, compiler=compiler)
    images, labels = start["images"].to(settings.device), start["labels"].to(settings.device)
    started = time.perf_counter()
    values = step(images, labels, full=True)
    _synchronize(settings)
    seconds = time.perf_counter() - started
    grads = {name: p.grad.detach().float().cpu() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return step, values, grads, seconds


def _throughput(settings: Settings, step, model, config, start: dict, steps: int) -> dict:
    """images/s over ``steps`` SGD steps after one warm step, and the peak memory allocated."""
    from fastwsol.train import build_optimizer

    images, labels = start["images"].to(settings.device), start["labels"].to(settings.device)
    optimizer = build_optimizer(model, config)

    def one_step():
        optimizer.zero_grad(set_to_none=True)
        step(images, labels, full=True)
        optimizer.step()

    one_step()
    _synchronize(settings)
    if settings.on_gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        settings.check_time("in the training-step loop")
        one_step()
    _synchronize(settings)
    seconds = time.perf_counter() - started
    return {"images_per_s": images.shape[0] * steps / seconds, "timed_steps": steps,
            "peak_memory_bytes": torch.cuda.max_memory_allocated() if settings.on_gpu else None}


def _gradient_errors(grads: dict, reference: dict) -> dict[str, float]:
    return {name: kernel_cases.relative_difference(grads[name], reference[name]) for name in reference if name in grads}


def _overall_error(grads: dict, reference: dict) -> float:
    """‖all gradients − reference‖ / ‖reference‖, over every parameter together."""
    difference = sum(float(torch.linalg.vector_norm(grads[n].double() - reference[n].double())) ** 2
                     for n in reference if n in grads)
    scale = sum(float(torch.linalg.vector_norm(reference[n].double())) ** 2 for n in reference)
    return (difference / scale) ** 0.5 if scale else difference**0.5


def _term_errors(values: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    names = ("total", *LOSS_TERMS)
    return {name: abs(float(v) - float(r)) / max(abs(float(r)), 1e-12) for name, v, r in zip(names, values, reference)}


def _case_fields(case_name: str, case: TrainCase) -> dict:
    return {"case": case_name, "model": case.model, "config": case.config, "image_size": case.image_size,
            "batch": case.batch}


def train_reference(settings: Settings, shared: dict, *, case_name: str, case: TrainCase) -> dict:
    """The authors' way (eager fp32 NCHW, reference ops): speed, peak memory and the reference
    gradients; and the eager bf16 channels_last step's gradient error, the yardstick of bf16."""
    start = initial_state(case)
    config = case_config(case, compiled=False, backend="reference", precision="fp32", channels_last=False)
    model = build_model(config, start, settings.device)
    step, values, grads, first_s = _first_step(settings, model, config, start)

    config_bf16 = case_config(case, compiled=False, backend="reference", precision="bf16", channels_last=True)
    model_bf16 = build_model(config_bf16, start, settings.device)
    _, values_bf16, grads_bf16, _ = _first_step(settings, model_bf16, config_bf16, start)
    del model_bf16
    eager_errors = _gradient_errors(grads_bf16, grads)
    speed = _throughput(settings, step, model, config, start, case.steps)
    eager_overall = _overall_error(grads_bf16, grads)
    shared[f"train {case_name}"] = {
        "start": start, "values": values, "grads": grads, "eager_bf16_errors": eager_errors,
        "eager_bf16_term_errors": _term_errors(values_bf16, values), "eager_bf16_gradient_error": eager_overall,
        "images_per_s": speed["images_per_s"],
    }
    return {**_case_fields(case_name, case), "way": "eager fp32 NCHW, reference ops (the authors' way)",
            "compared_with": "(the reference of the compiled row)", "first_step_s": first_s, **speed,
            "loss_terms": dict(zip(("total", *LOSS_TERMS), map(float, values))),
            "eager_bf16_gradient_error": eager_overall, "ok": bool(torch.isfinite(values).all())}


def train_ours(settings: Settings, shared: dict, *, case_name: str, case: TrainCase) -> dict:
    """The compiled bf16 channels_last step with the Triton kernels against the authors' way:
    first-step gradients and loss terms, images/s (the headline speed-up) and peak memory."""
    import torch._dynamo

    reference = shared.get(f"train {case_name}")
    start = reference["start"] if reference else initial_state(case)
    config = case_config(case, compiled=True, backend="triton", precision="bf16", channels_last=True)
    torch._dynamo.reset()  # one compile per model, counted from zero whatever ran before in this process
    model = build_model(config, start, settings.device)
    compiler = "inductor" if settings.on_gpu else "aot_eager"
    step, values, grads, first_s = _first_step(settings, model, config, start, compiler)
    speed = _throughput(settings, step, model, config, start, case.steps)
    details = {**_case_fields(case_name, case), "way": f"compiled ({compiler}) bf16 channels_last, Triton kernels",
               "compared_with": "eager fp32 NCHW reference step (gradients, loss terms, images/s)",
               "first_step_s": first_s, **speed, "loss_terms": dict(zip(("total", *LOSS_TERMS), map(float, values)))}
    if not bool(torch.isfinite(values).all()):
        return {**details, "ok": False, "reason": f"a loss term is not finite: {details['loss_terms']}"}
    if reference is None:
        return {**details, "ok": None,
                "reason": "the eager fp32 row did not finish: gradients not compared, no speed-up"}
    errors = _gradient_errors(grads, reference["grads"])
    bounds = {name: kernel_cases.train_step_bound(reference["eager_bf16_errors"][name]) for name in errors}
    worst = max(errors, key=lambda name: errors[name] / bounds[name])
    term_errors = _term_errors(values, reference["values"])
    term_bounds = {k: kernel_cases.train_step_bound(reference["eager_bf16_term_errors"][k]) for k in term_errors}
    worst_term = max(term_errors, key=lambda k: term_errors[k] / term_bounds[k])
    details.update(
        speedup=speed["images_per_s"] / reference["images_per_s"],
        gradient_error=_overall_error(grads, reference["grads"]),
        eager_bf16_gradient_error=reference["eager_bf16_gradient_error"],
        worst_parameter={"name": worst, "error": errors[worst], "bound": bounds[worst],
                         "eager_bf16_error": reference["eager_bf16_errors"][worst]},
        worst_loss_term={"name": worst_term, "error": term_errors[worst_term], "bound": term_bounds[worst_term]},
        loss_term_errors={k: {"error": term_errors[k], "bound": term_bounds[k]} for k in term_errors},
        missing_gradients=sorted(set(reference["grads"]) - set(grads)),
    )
    details["ok"] = (errors[worst] <= bounds[worst] and term_errors[worst_term] <= term_bounds[worst_term]
                     and not details["missing_gradients"])
    if not details["ok"]:
        details["reason"] = (f"gradient of {worst}: {errors[worst]:.3g} > bound {bounds[worst]:.3g}; loss term "
                             f"{worst_term}: {term_errors[worst_term]:.3g} (bound {term_bounds[worst_term]:.3g}); "
                             f"missing gradients: {details['missing_gradients'] or 'none'}")
    return details
