#include "python/int8_call.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/rule_checks.h"
#include "cpu/kernel_table.h"
#include "fastopt/quant8.h"
#include "python/hyper_checks.h"
#include "python/torch_versions.h"

namespace fastopt::bindings {

namespace {

// fastopt.QuantizedState and the two maps (NumPy float32 arrays of 256 sorted values), registered by
// fastopt/__init__.py at import; they live as long as the process.
PyObject* quantized_type = nullptr;
Quant8Map maps[2];  // [unsigned, signed]: the values and their decision tables (quant8.h)
Quant8Tables tables[2];

std::string label(const std::string& name, size_t i) { return name + "[" + std::to_string(i) + "]"; }

int64_t block_count(int64_t n) { return (n + kQuantBlock - 1) / kQuantBlock; }

bool is_quantized(py::handle obj) {
  if (quantized_type == nullptr) return false;
  const int r = PyObject_IsInstance(obj.ptr(), quantized_type);
  if (r < 0) throw py::error_already_set();
  return r == 1;
}

std::vector<py::handle> entries(py::handle obj) {
  std::vector<py::handle> out;
  if (PyList_Check(obj.ptr()) || PyTuple_Check(obj.ptr())) {
    for (py::handle item : py::reinterpret_borrow<py::sequence>(obj)) out.push_back(item);
  } else {
    out.push_back(obj);
  }
  return out;
}

void on_cpu(const ArrayRef& a, const std::string& where) {
  if (a.device.kind != DeviceKind::CPU) {
    throw py::value_error(where + " is on " + device_str(a.device) +
                          ": 8-bit optimizer state is implemented on the CPU only for now");
  }
}

// One state argument of QuantizedState entries: their codes and absmax as array arguments.
struct QuantArg {
  std::string name;
  ArrayArg codes, absmax;
};

// The map a state argument's entries must use: one fixed sign, or either (the first entry's, then every
// entry the same).
struct SignRule {
  enum { Fixed, Either } kind = Fixed;
  bool want_signed = true;
  const char* why = "";  // why a Fixed one is so ("holds first moments, which take the signed map")
};

// codes_name / absmax_name ("exp_avgs.codes"): the arrays' names in check_disjoint's messages. `is_signed`:
// the map the entries use.
QuantArg take_quantized(py::handle obj, const char* name, const char* codes_name, const char* absmax_name,
                        const SignRule& rule, CallDevice& call, bool* signed_out = nullptr) {
  QuantArg q{name, ArrayArg{codes_name, true, {}}, ArrayArg{absmax_name, true, {}}};
  const std::vector<py::handle> items = entries(obj);
  bool first_signed = rule.want_signed;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string where = label(name, i);
    if (!is_quantized(items[i])) {
      throw py::type_error(where + " is a " + std::string(Py_TYPE(items[i].ptr())->tp_name) +
                           "; with 8-bit state every entry of " + name +
                           " is a fastopt.QuantizedState (one form per argument and call)");
    }
    const bool is_signed = items[i].attr("signed").cast<bool>();
    if (rule.kind == SignRule::Either && i == 0) first_signed = is_signed;
    if (is_signed != first_signed) {
      throw py::value_error(where + " is " + (is_signed ? "a signed" : "an unsigned") + " QuantizedState; " + name +
                            (rule.kind == SignRule::Fixed ? std::string(" ") + rule.why
                                                          : std::string(" holds one map: its first entry is ") +
                                                                (first_signed ? "signed" : "unsigned")));
    }
    ArrayRef codes = take_array(items[i].attr("codes"), where + ".codes", call);
    ArrayRef absmax = take_array(items[i].attr("absmax"), where + ".absmax", call);
    on_cpu(codes, where + ".codes");
    on_cpu(absmax, where + ".absmax");
    if (codes.dtype != DType::UInt8) {
      throw py::type_error(where + ".codes has dtype " + codes.dtype_name() + "; the codes are uint8");
    }
    if (absmax.dtype != DType::Float32) {
      throw py::type_error(where + ".absmax has dtype " + absmax.dtype_name() + "; absmax is float32");
    }
    check_layout(codes, where + ".codes", true);
    check_layout(absmax, where + ".absmax", true);
    q.codes.arrays.push_back(std::move(codes));
    q.absmax.arrays.push_back(std::move(absmax));
  }
  if (signed_out != nullptr) *signed_out = first_signed;
  return q;
}

const SignRule kFirstMoments{SignRule::Fixed, true, "holds first moments, which take the signed map (signed=True)"};
const SignRule kSecondMoments{SignRule::Fixed, false,
                              "holds second moments, which take the unsigned map (signed=False)"};

void check_against_params(const QuantArg& q, const ArrayArg& params) {
  if (q.codes.arrays.size() != params.arrays.size()) {
    throw py::value_error(q.name + " holds " + std::to_string(q.codes.arrays.size()) + " states but params holds " +
                          std::to_string(params.arrays.size()) + " arrays");
  }
  for (size_t i = 0; i < params.arrays.size(); ++i) {
    const ArrayRef& p = params.arrays[i];
    const ArrayRef& codes = q.codes.arrays[i];
    const ArrayRef& absmax = q.absmax.arrays[i];
    if (!same_shape(codes, p)) {
      throw py::value_error(label(q.name, i) + ".codes has shape " + shape_str(codes) + " but " +
                            label("params", i) + " has shape " + shape_str(p));
    }
    if (absmax.ndim != 1 || absmax.size != block_count(p.size)) {
      throw py::value_error(label(q.name, i) + ".absmax has shape " + shape_str(absmax) + "; " + label("params", i) +
                            " has " + std::to_string(p.size) + " elements: (" + std::to_string(block_count(p.size)) +
                            ",) blocks of 256");
    }
  }
}

void check_float32(const ArrayArg& arg) {
  for (size_t i = 0; i < arg.arrays.size(); ++i) {
    const ArrayRef& a = arg.arrays[i];
    on_cpu(a, label(arg.name, i));
    if (a.dtype != DType::Float32) {
      throw py::type_error(label(arg.name, i) + " has dtype " + a.dtype_name() +
                           "; with 8-bit state params and grads are float32");
    }
    check_layout(a, label(arg.name, i), arg.written);
  }
}

cpu::Int8State state_of(const QuantArg* q, size_t i) {
  if (q == nullptr) return {};
  return {static_cast<uint8_t*>(q->codes.arrays[i].data), static_cast<float*>(q->absmax.arrays[i].data)};
}

const float* map_array(py::handle obj, const char* name) {
  auto a = py::reinterpret_borrow<py::object>(obj);
  if (!py::isinstance<py::array_t<float>>(a)) throw py::type_error(std::string(name) + " must be a float32 array");
  auto arr = py::reinterpret_borrow<py::array_t<float>>(a);
  if (arr.ndim() != 1 || arr.size() != 256 || !(arr.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) + " must hold 256 float32 values");
  }
  for (py::ssize_t i = 1; i < 256; ++i) {
    if (!(arr.data()[i - 1] < arr.data()[i])) throw py::value_error(std::string(name) + " must be sorted");
  }
  return arr.data();  // (the registration keeps the array alive once it is accepted)
}

void require_maps() {
  if (maps[0].values == nullptr) throw py::type_error("fastopt.QuantizedState is not registered (import fastopt)");
}

// A map passed from Python: one of the two registered maps (which the kernels hold).
Quant8Map registered_map(py::handle obj) {
  require_maps();
  auto arr = py::reinterpret_borrow<py::array>(obj);
  for (const Quant8Map& m : maps) {
    if (arr.data() == static_cast<const void*>(m.values)) return m;
  }
  throw py::value_error("map must be fastopt's SIGNED_MAP or UNSIGNED_MAP");
}

// float32 CPU params and grads, as many grads as params, of their shapes.
void check_params_and_grads(const ArrayArg& params, const ArrayArg& grads) {
  check_float32(params);
  check_float32(grads);
  const size_t n = params.arrays.size();
  if (grads.arrays.size() != n) {
    throw py::value_error("grads holds " + std::to_string(grads.arrays.size()) + " arrays but params holds " +
                          std::to_string(n));
  }
  for (size_t i = 0; i < n; ++i) {
    if (!same_shape(grads.arrays[i], params.arrays[i])) {
      throw py::value_error(label("grads", i) + " has shape " + shape_str(grads.arrays[i]) + " but " +
                            label("params", i) + " has shape " + shape_str(params.arrays[i]));
    }
  }
}

}  // namespace

bool quantized_state(py::handle obj) {
  if (quantized_type == nullptr) return false;
  if (PyList_Check(obj.ptr()) || PyTuple_Check(obj.ptr())) {
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(obj.ptr());
    return n > 0 && is_quantized(PySequence_Fast_GET_ITEM(obj.ptr(), 0));
  }
  return is_quantized(obj);
}

void refuse_rounding_of_codes(bool stochastic_rounding) {
  if (stochastic_rounding) {
    throw py::value_error("stochastic_rounding=True rounds bfloat16 values; 8-bit state is rounded to the "
                          "nearest code");
  }
}

bool run_adam_int8(const AdamHyper& hyper, const ArrayArg& params, const ArrayArg& grads, py::handle exp_avgs,
                   py::handle exp_avg_sqs, py::handle max_exp_avg_sqs, bool skip_now, CallDevice& call) {
  require_maps();
  check_params_and_grads(params, grads);
  const size_t n = params.arrays.size();
  const QuantArg m = take_quantized(exp_avgs, "exp_avgs", "exp_avgs.codes", "exp_avgs.absmax", kFirstMoments, call);
  const QuantArg v = take_quantized(exp_avg_sqs, "exp_avg_sqs", "exp_avg_sqs.codes", "exp_avg_sqs.absmax",
                                    kSecondMoments, call);
  std::optional<QuantArg> vmax;
  if (hyper.amsgrad) {
    if (max_exp_avg_sqs.is_none()) throw py::value_error("max_exp_avg_sqs is required when amsgrad=True");
    vmax = take_quantized(max_exp_avg_sqs, "max_exp_avg_sqs", "max_exp_avg_sqs.codes",
                          "max_exp_avg_sqs.absmax", kSecondMoments, call);
  }
  std::vector<const ArrayArg*> written{&grads, &m.codes, &m.absmax, &v.codes, &v.absmax};
  check_against_params(m, params);
  check_against_params(v, params);
  if (vmax) check_against_params(*vmax, params);
  if (vmax) {
    written.push_back(&vmax->codes);
    written.push_back(&vmax->absmax);
  }
  check_disjoint(params, written);
  require(rules::check_range(hyper, rules::math_range(false)));
  if (skip_now || n == 0) return skip_now;
  std::vector<const ArrayArg*> marked(written.begin() + 1, written.end());
  mark_written(params, marked);

  cpu::Int8AdamCall run;
  run.signed_map = maps[1];
  run.unsigned_map = maps[0];
  run.tensors.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    cpu::Int8AdamTensor t;
    t.param = static_cast<float*>(params.arrays[i].data);
    t.grad = static_cast<const float*>(grads.arrays[i].data);
    t.exp_avg = state_of(&m, i);
    t.exp_avg_sq = state_of(&v, i);
    t.max_exp_avg_sq = state_of(vmax ? &*vmax : nullptr, i);
    t.size = params.arrays[i].size;
    run.tensors.push_back(t);
  }
  py::gil_scoped_release no_gil;
  return cpu::kernels().adam_int8(run, hyper);
}

bool run_int8_state(const ArrayArg& params, const ArrayArg& grads, const std::vector<Int8Slot>& slots,
                    bool skip_now, CallDevice& call, const std::function<void()>& check_hyper,
                    const std::function<bool(const cpu::Int8StateCall&)>& kernel) {
  require_maps();
  check_params_and_grads(params, grads);
  const size_t n = params.arrays.size();
  if (slots.size() > size_t(cpu::kInt8StateSlots)) throw std::logic_error("run_int8_state: too many state operands");
  std::vector<std::string> names;  // (kept alive: the QuantArgs' array names point into them)
  names.reserve(2 * slots.size());
  std::vector<std::optional<QuantArg>> state(slots.size());
  bool is_signed[cpu::kInt8StateSlots] = {};
  std::vector<const ArrayArg*> written{&grads};
  for (size_t j = 0; j < slots.size(); ++j) {
    if (slots[j].name == nullptr) continue;
    if (slots[j].obj.is_none()) throw py::value_error(std::string(slots[j].name) + " is required");
    names.push_back(std::string(slots[j].name) + ".codes");
    names.push_back(std::string(slots[j].name) + ".absmax");
    const SignRule rule = slots[j].map == StateMap::Signed
                              ? SignRule{SignRule::Fixed, true,
                                         "holds values of either sign, which take the signed map (signed=True)"}
                              : SignRule{SignRule::Either, false, ""};
    state[j] = take_quantized(slots[j].obj, slots[j].name, names[names.size() - 2].c_str(),
                              names.back().c_str(), rule, call, &is_signed[j]);
    check_against_params(*state[j], params);
  }
  for (const auto& q : state) {
    if (!q) continue;
    written.push_back(&q->codes);
    written.push_back(&q->absmax);
  }
  check_disjoint(params, written);
  check_hyper();
  if (skip_now || n == 0) return skip_now;
  std::vector<const ArrayArg*> marked(written.begin() + 1, written.end());
  mark_written(params, marked);

  cpu::Int8StateCall run;
  for (size_t j = 0; j < slots.size(); ++j) run.maps[j] = maps[is_signed[j] ? 1 : 0];
  run.tensors.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    cpu::Int8StateTensor t;
    t.param = static_cast<float*>(params.arrays[i].data);
    t.grad = static_cast<const float*>(grads.arrays[i].data);
    for (size_t j = 0; j < slots.size(); ++j) t.state[j] = state_of(state[j] ? &*state[j] : nullptr, i);
    t.size = params.arrays[i].size;
    run.tensors.push_back(t);
  }
  py::gil_scoped_release no_gil;
  return kernel(run);
}

namespace {

// values (float32), codes (uint8, values' shape), absmax (float32, one per block): checked for a
// blockwise quantise (values read, codes and absmax written) or dequantise (the other way).
cpu::Quant8Call blockwise_call(py::handle values_obj, py::handle codes_obj, py::handle absmax_obj, py::handle map,
                               bool quantise, std::vector<ArrayRef>& keep) {
  CallDevice call;
  ArrayRef values = take_array(values_obj, quantise ? "x" : "out", call);
  ArrayRef codes = take_array(codes_obj, "codes", call);
  ArrayRef absmax = take_array(absmax_obj, "absmax", call);
  on_cpu(values, quantise ? "x" : "out");
  if (values.dtype != DType::Float32) {
    throw py::type_error(std::string(quantise ? "x" : "out") + " has dtype " + values.dtype_name() +
                         "; blockwise 8-bit quantisation takes float32 values");
  }
  if (codes.dtype != DType::UInt8) throw py::type_error("codes has dtype " + codes.dtype_name() + "; codes are uint8");
  if (absmax.dtype != DType::Float32) {
    throw py::type_error("absmax has dtype " + absmax.dtype_name() + "; absmax is float32");
  }
  check_layout(values, quantise ? "x" : "out", !quantise);
  check_layout(codes, "codes", quantise);
  check_layout(absmax, "absmax", quantise);
  if (!same_shape(codes, values)) {
    throw py::value_error("codes has shape " + shape_str(codes) + " but the values have shape " + shape_str(values));
  }
  if (absmax.ndim != 1 || absmax.size != block_count(values.size)) {
    throw py::value_error("absmax has shape " + shape_str(absmax) + "; " + std::to_string(values.size) +
                          " values take (" + std::to_string(block_count(values.size)) + ",) blocks of 256");
  }
  const ArrayRef* all[3] = {&values, &codes, &absmax};
  for (int a = 0; a < 3; ++a) {
    for (int b = a + 1; b < 3; ++b) {
      if (shares_memory(*all[a], *all[b])) throw py::value_error("the values, codes and absmax must not share memory");
    }
  }
  cpu::Quant8Call c;
  c.map = registered_map(map);
  c.values = static_cast<float*>(values.data);
  c.codes = static_cast<uint8_t*>(codes.data);
  c.absmax = static_cast<float*>(absmax.data);
  c.size = values.size;
  keep = {values, codes, absmax};
  return c;
}

// Checks the arrays (nothing is written on a refusal), marks what the call writes (codes and absmax when
// quantising, the values when reading back) and runs it without the GIL.
void run_blockwise(py::handle values, py::handle codes, py::handle absmax, py::handle map, bool quantise) {
  std::vector<ArrayRef> keep;
  const cpu::Quant8Call c = blockwise_call(values, codes, absmax, map, quantise, keep);
  if (quantise) {  // keep: values, codes, absmax
    mark_written(keep[1]);
    mark_written(keep[2]);
  } else {
    mark_written(keep[0]);
  }
  py::gil_scoped_release no_gil;
  if (quantise) {
    cpu::kernels().quantize8(c);
  } else {
    cpu::kernels().dequantize8(c);
  }
}

}  // namespace

void bind_quantized(py::module_& m) {
  m.def(
      "_register_quantized",
      [](py::handle type, py::handle signed_map, py::handle unsigned_map) {
        if (!PyType_Check(type.ptr())) throw py::type_error("type must be a class");
        const float* s = map_array(signed_map, "signed_map");
        const float* u = map_array(unsigned_map, "unsigned_map");
        // (built aside and copied in only when both are exact: a refused map leaves the live tables as they were)
        auto built_u = std::make_unique<Quant8Tables>(), built_s = std::make_unique<Quant8Tables>();
        if (!build_quant8_tables(u, *built_u) || !build_quant8_tables(s, *built_s)) {
          throw py::value_error("a map has two decision bounds within one lookup bucket, or one in a clamped "
                                "bucket (quant8.h): not a dynamic map");
        }
        tables[0] = *built_u;
        tables[1] = *built_s;
        signed_map.inc_ref();  // the maps and the class are kept for the process's life
        unsigned_map.inc_ref();
        type.inc_ref();
        quantized_type = type.ptr();
        maps[0] = Quant8Map{u, tables[0].lut};
        maps[1] = Quant8Map{s, tables[1].lut};
      },
      "fastopt/__init__.py: the QuantizedState class and the two dynamic maps the 8-bit kernels use.");
  m.def(
      "_quantize_blockwise",
      [](py::handle x, py::handle codes, py::handle absmax, py::handle map) {
        run_blockwise(x, codes, absmax, map, true);
      },
      "Blockwise dynamic 8-bit quantisation of x into codes and absmax (fastopt.QuantizedState.quantize).");
  m.def(
      "_dequantize_blockwise",
      [](py::handle codes, py::handle absmax, py::handle map, py::handle out) {
        run_blockwise(out, codes, absmax, map, false);
      },
      "map[codes] * absmax of each block into out (fastopt.QuantizedState.dequantize).");
}

}  // namespace fastopt::bindings
