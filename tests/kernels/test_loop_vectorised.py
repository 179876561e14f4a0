"""Guard: every optimizer loop is vectorised at every instruction set.

The update loops are plain C++ loops that the compiler vectorises (csrc/cpu/optim_loops.h); a change
to a rule, a flag or the chunk loop can silently turn one back into scalar code, which still passes
every numerical test while running several times slower. This test compiles csrc/cpu/kernels_for_isa.cpp
once per instruction set with the flags CMakeLists.txt gives it, disassembles the object with objdump
and checks, for every optimizer, storage type and combination of compile-time flags, that the code
of that instantiation holds a packed multiply of the set's full vector width (every update rule
multiplies, and -ffp-contract=off keeps the multiplies apart from the adds), and that no per-element update
or helper (FASTOPT_HD, always inlined: fastopt/macros.h) was compiled out of line, where a loop calling it
runs scalar (adam_update and rmsprop_update once were, in the one-thread copies of their loops: 5 ns an
element). It skips where the
source, a C++ compiler or objdump is missing, and off x86-64 (where only the baseline is built).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

import repo_paths

ROOT = Path(repo_paths.ROOT)
SOURCE = ROOT / "csrc" / "cpu" / "kernels_for_isa.cpp"
#: every object of an instruction set (CMakeLists.txt's fastopt_isa_<set>): the kernel table's, and the rules'
#: loops over bfloat16 storage (csrc/cpu/rule_bf16_loops.h) and over 8-bit state (rule_int8_loops.h), compiled apart
SOURCES = (SOURCE, ROOT / "csrc" / "cpu" / "rules_bf16_for_isa.cpp", ROOT / "csrc" / "cpu" / "rules_int8_for_isa.cpp")
OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam")


def _registered_rules():
    """The optimizers described as rules (csrc/include/fastopt/registry.h): their one generic loop,
    rule_update<fastopt::<Name>Rule, T>, is instantiated per variant and checked the same way."""
    text = (ROOT / "csrc" / "include" / "fastopt" / "registry.h").read_text()
    names = re.search(r"using Registry = RuleList<([^>]*)>", text).group(1)
    # (rules with per-tensor sums, LAMB's, run their own two-pass loop, tensor_sum_loops.h, not rule_update)
    with_sums = set()
    for header in (ROOT / "csrc" / "include" / "fastopt").glob("*.h"):
        for struct in re.split(r"\n(?=struct )", header.read_text()):
            found = re.match(r"struct (\w+Rule)\b", struct)
            if found and "kTensorSums" in struct:
                with_sums.add(found.group(1))
    return tuple(n.strip() for n in names.split(",") if n.strip() and n.strip() not in with_sums)


RULES = _registered_rules() if (ROOT / "csrc").exists() else ()
#: The classic four's loops per parameter storage (csrc/cpu/storage.h): its name in their
#: instantiations (optim_loops.h's *_stored<storage, math, list>) and the type of their math.
STORAGE = {"float": ("float", "float"), "double": ("double", "double"),
           "float16": ("fastopt::cpu::F16", "float"), "bfloat16": ("fastopt::cpu::Bf16", "float")}
#: A call to an element conversion (csrc/cpu/storage.h, fastopt/fp16.h, fastopt/bf16.h) left outlined.
CONVERSION_CALL = re.compile(r"^call\s.*\b(float_to_f16|f16_to_float|float_to_bf16|bf16_to_float|widen|narrow)\b")
#: The per-element updates and their helpers (FASTOPT_HD in csrc/include/fastopt/): a function of one of these
#: names in the object is an out-of-line copy, which the loops that use it call once per element.
ELEMENT_HELPER = re.compile(r"(?:^|\s)fastopt::(sgd_update|adagrad_update|rmsprop_update|adam_update|unscale_grad|"
                            r"apply_weight_decay|l2_decayed|lerp_|sqrt_|sign_|signum|maximum|clamp_|is_finite_)[<(]")
#: The packed multiply a vectorised loop of each set uses, per arithmetic type, and its register.
PACKED = {
    "baseline": {"float": ("mulps", "xmm"), "double": ("mulpd", "xmm")},
    "avx2": {"float": ("vmulps", "ymm"), "double": ("vmulpd", "ymm")},
    "avx512": {"float": ("vmulps", "zmm"), "double": ("vmulpd", "zmm")},
}


def _compiler():
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cmake_flags():
    """The kernel flags and the per-set flags, as CMakeLists.txt sets them."""
    text = (ROOT / "CMakeLists.txt").read_text()
    kernel = re.search(r"set\(FASTOPT_KERNEL_FLAGS\s+([^)]*)\)", text).group(1).split()
    per_isa = {m.group(1): m.group(2).replace('""', "").split()
               for m in re.finditer(r"set\(FASTOPT_ISA_FLAGS_(\w+)\s+([^)]*)\)", text)}
    return kernel, per_isa


pytestmark = [
    pytest.mark.skipif(not SOURCE.exists(), reason="needs the source tree (csrc/)"),
    pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 instruction sets"),
    pytest.mark.skipif(_compiler() is None, reason="no C++ compiler"),
    pytest.mark.skipif(shutil.which("objdump") is None, reason="no objdump"),
]


def _compile_all(extra=()):
    """Starts the compiles of every instruction set's objects (in parallel); returns
    {isa: [(process, object path), ...]}."""
    kernel, per_isa = _cmake_flags()
    tmp = Path(tempfile.mkdtemp(prefix="fastopt-vec-"))
    jobs = defaultdict(list)
    for isa in PACKED:
        for source in SOURCES:
            obj = tmp / f"{isa}-{source.stem}.o"
            cmd = [_compiler(), "-std=c++17", "-fPIC", "-fvisibility=hidden", "-fopenmp", *kernel,
                   *per_isa.get(isa, []), *extra, f"-DFASTOPT_ISA_NS={isa}", f"-I{ROOT / 'csrc' / 'include'}",
                   f"-I{ROOT / 'csrc'}", "-c", str(source), "-o", str(obj)]
            jobs[isa].append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), obj))
    return jobs


def _functions(obj: Path):
    """{demangled function name: its instruction lines} of an object file."""
    out = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", str(obj)], capture_output=True,
                         text=True, check=True, timeout=300).stdout
    functions, current = {}, None
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            current = m.group(1)
            functions[current] = []
        elif current is not None and "\t" in line:
            functions[current].append(line.split("\t")[-1])
    return functions


def unvectorised(functions, isa: str):
    """The instantiations (optimizer, type, compile-time flags) of `isa` whose code holds no packed
    multiply of the set's width: an empty list when every loop is vectorised."""
    groups = defaultdict(list)
    for name, body in functions.items():
        for rule in RULES:
            for dtype in ("float", "double"):
                if f"{isa}::rule_update<fastopt::{rule}, {dtype}>" in name:
                    # the variant's lambda (integral_constant<int, V>), then the scaling's (bool)
                    variant = re.search(r"integral_constant<int, (\d+)>", name)
                    scaled = re.search(r"integral_constant<bool, (true|false)>", name)
                    bits = f"V{variant.group(1)}{'T' if scaled.group(1) == 'true' else 'F'}" \
                        if variant and scaled else ""
                else:
                    elements = re.search(rf"{isa}::rule_elements<fastopt::{rule}, (\d+), (true|false), {dtype},", name)
                    if not elements:
                        continue
                    bits = f"V{elements.group(1)}{'T' if elements.group(2) == 'true' else 'F'}"
                groups[(rule, dtype, bits)].extend(body)
        for opt in OPTIMIZERS:
            for dtype, (storage, math) in STORAGE.items():
                if f"{isa}::{opt}_stored<{storage}, {math}," in name:
                    # the chunk loop and OpenMP body of one flag combination (with_flags' lambda)
                    flags = re.search(r"operator\(\)<((?:std::integral_constant<bool, (?:true|false)>(?:, )?)+)\s*>",
                                      name)
                    bits = re.findall(r"bool, (true|false)", flags.group(1)) if flags else []
                else:
                    # the element loop itself, where the compiler did not inline it
                    elements = re.search(rf"{isa}::{opt}_elements<((?:(?:true|false), )+){storage}, {math}>\(",
                                         name)
                    if not elements:
                        continue
                    bits = re.findall(r"true|false", elements.group(1))
                groups[(opt, dtype, "".join("T" if b == "true" else "F" for b in bits))].extend(body)
    # The classic four over bfloat16 storage (adam_bf16_loops.h, bf16_state_loops.h): <opt>_bf16_typed<params,
    # state> with unsigned short for bfloat16, the math in float; one chunk loop per flag combination (the
    # optimizer's flags, then stochastic rounding).
    for name, body in functions.items():
        typed = re.search(rf"{isa}::(\w+)_bf16_typed<(unsigned short|float), (unsigned short|float)>\(", name)
        if not typed or "for_each_chunk" not in name:
            continue
        flags = re.search(r"operator\(\)<((?:std::integral_constant<bool, (?:true|false)>(?:, )?)+)\s*>", name)
        bits = re.findall(r"bool, (true|false)", flags.group(1)) if flags else []
        storage = typed.group(1) + "_bf16<" + ("bf16" if typed.group(2) != "float" else "f32") + ", " + \
            ("bf16" if typed.group(3) != "float" else "f32") + ">"
        groups[(storage, "float", "".join("T" if b == "true" else "F" for b in bits))].extend(body)
    # The rules over bfloat16 storage (rule_bf16_loops.h): rule_bf16_typed<Rule, params, state>'s chunk loop per
    # variant and flags (scaled, stochastic rounding), and rule_bf16_chunk<Rule, V, SCALED, SR, P, S, ...> where it
    # was not inlined.
    short = {"float": "f32", "unsigned short": "bf16"}
    for name, body in functions.items():
        for rule in RULES:
            typed = re.search(rf"{isa}::rule_bf16_typed<fastopt::{rule}, (unsigned short|float), "
                              r"(unsigned short|float)>", name)
            chunk = re.search(rf"{isa}::rule_bf16_chunk<fastopt::{rule}, (\d+), (true|false), (true|false), "
                              r"(unsigned short|float), (unsigned short|float),", name)
            if chunk:
                p, st = chunk.group(4), chunk.group(5)
                bits = f"V{chunk.group(1)}" + "".join("T" if b == "true" else "F" for b in chunk.group(2, 3))
            elif typed and "for_each_chunk" in name:
                p, st = typed.group(1), typed.group(2)
                variant = re.search(r"integral_constant<int, (\d+)>", name)
                flags = re.search(r"operator\(\)<((?:std::integral_constant<bool, (?:true|false)>(?:, )?)+)\s*>", name)
                if not (variant and flags):
                    continue
                bits = f"V{variant.group(1)}" + "".join(
                    "T" if b == "true" else "F" for b in re.findall(r"bool, (true|false)", flags.group(1)))
            else:
                continue
            groups[(f"{rule}_bf16<{short[p]}, {short[st]}>", "float", bits)].extend(body)
    # The rules over 8-bit state (rule_int8_loops.h): rule_int8_block<Rule, V, SCALED, ...>, one block's read-back,
    # rule loop and quantisation (GCC keeps it out of line). (Its read-back multiplies too, so this catches a
    # block left wholly scalar, not the rule's loop alone: that is the float32 loop the groups above check.)
    for name, body in functions.items():
        for rule in RULES:
            block = re.search(rf"{isa}::rule_int8_block<fastopt::{rule}, (\d+), (true|false),", name)
            if block:
                bits = f"V{block.group(1)}{'T' if block.group(2) == 'true' else 'F'}"
                groups[(f"{rule}_int8", "float", bits)].extend(body)
    missing = []
    for (opt, dtype, bits), body in sorted(groups.items()):
        if not bits:  # the entry point itself: dispatches on the flags, no loop of its own
            continue
        op, reg = PACKED[isa][STORAGE.get(dtype, (None, dtype))[1]]
        if not any(line.startswith(op) and f"%{reg}" in line for line in body):
            missing.append(f"{opt}<{dtype}> flags {bits}")
        # A copy of the loop that calls an element conversion is scalar, however vectorised the others are
        # (one thread and small calls run their own copies: parallel.h).
        calls = sorted({m.group(1) for line in body if (m := CONVERSION_CALL.search(line))})
        if calls:
            missing.append(f"{opt}<{dtype}> flags {bits} calls {', '.join(calls)}")
    # Every optimizer must have been found with at least one flag combination.
    found = {(opt, dtype) for opt, dtype, flags in groups if flags}
    for opt in OPTIMIZERS + RULES:
        for dtype in STORAGE if opt in OPTIMIZERS else ("float", "double"):
            if (opt, dtype) not in found:
                missing.append(f"{opt}<{dtype}>: no instantiation found")
    for storage in (f"{opt}_bf16<{p}, {s}>" for opt in OPTIMIZERS + RULES for p, s in (("f32", "bf16"), ("bf16", "f32"),
                                                                                        ("bf16", "bf16"))):
        if (storage, "float") not in found:
            missing.append(f"{storage}: no instantiation found")
    for rule in RULES:
        if rule != "MuonApplyRule" and (f"{rule}_int8", "float") not in found:  # (the apply pass keeps no state)
            missing.append(f"{rule}_int8: no instantiation found")
    return missing


def outlined(functions):
    """The per-element helpers compiled out of line (none when every one is inlined into its loops)."""
    return sorted({m.group(1) for name in functions if (m := ELEMENT_HELPER.search(name))})


def _check(jobs):
    results = {}
    for isa, compiles in jobs.items():
        functions = {}
        for proc, obj in compiles:
            out, _ = proc.communicate(timeout=900)
            assert proc.returncode == 0, f"compiling the {isa} kernels ({obj.name}) failed:\n{out[-3000:]}"
            functions.update(_functions(obj))
        results[isa] = unvectorised(functions, isa) + [f"{name} compiled out of line" for name in outlined(functions)]
    return results


def test_every_optimizer_loop_is_vectorised_at_every_instruction_set():
    results = _check(_compile_all())
    assert results == {isa: [] for isa in PACKED}, f"loops that no longer vectorise: {results}"


def test_the_guard_sees_a_loop_that_does_not_vectorise():
    # The same compile with the vectoriser off, and the helpers inlined only where GCC likes (as before
    # FASTOPT_HD was always inlined), must be caught, or the test above could never fail.
    results = _check(_compile_all(extra=("-fno-tree-vectorize", "-DFASTOPT_ALWAYS_INLINE=")))
    for isa, missing in results.items():
        assert not any("no instantiation" in m for m in missing), (isa, missing)
        assert any(m.startswith("sgd<float> flags") for m in missing), (isa, missing)
        assert any(m.startswith("adam<double> flags") for m in missing), (isa, missing)
        assert any(m.startswith("rmsprop<float16> flags") for m in missing), (isa, missing)
        assert any(m.startswith("LionRule<float> flags") for m in missing), (isa, missing)
        assert any(m.startswith("adam_bf16<bf16, bf16><float> flags") for m in missing), (isa, missing)
        assert any(m.startswith("rmsprop_bf16<f32, bf16><float> flags") for m in missing), (isa, missing)
        assert any(m.startswith("LionRule_bf16<bf16, bf16><float> flags") for m in missing), (isa, missing)
        assert any(m.startswith("LionRule_int8<float> flags") for m in missing), (isa, missing)
        assert "adam_update compiled out of line" in missing, (isa, missing)
