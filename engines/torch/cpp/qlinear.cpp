// fbgemm's dynamic int8 linear layer (`quantized::linear_prepack` and
// `quantized::linear_dynamic`), reached through libtorch's operator
// dispatcher. These are custom ops registered by libtorch_cpu itself
// (TORCH_LIBRARY(quantized, ...)), which tch's generated ATen bindings
// do not cover; PyTorch's `torch.ao.quantization.quantize_dynamic` calls
// the same two ops. Boxed calls keep this file free of the packed
// weight's C++ class (`LinearPackedParamsBase`): the packed weight is
// held as an opaque `c10::IValue`.
//
// Every entry point catches C++ exceptions and copies their message into
// the caller's buffer; nothing throws across the C boundary.

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/stack.h>

#include <cstring>
#include <exception>
#include <string>

namespace {

void put_error(const char* what, char* err, size_t n) {
  if (err == nullptr || n == 0) return;
  std::strncpy(err, what, n - 1);
  err[n - 1] = '\0';
}

c10::OperatorHandle op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

}  // namespace

extern "C" {

// Selects fbgemm as libtorch's quantized engine. Returns 1 when this
// libtorch build has it, 0 (with the engines it has in `err`) otherwise.
int em_qlinear_use_fbgemm(char* err, size_t n) {
  try {
    auto& ctx = at::globalContext();
    for (auto e : ctx.supportedQEngines()) {
      if (e == at::QEngine::FBGEMM) {
        ctx.setQEngine(at::QEngine::FBGEMM);
        return 1;
      }
    }
    std::string have;
    for (auto e : ctx.supportedQEngines()) {
      if (!have.empty()) have += ", ";
      have += c10::toString(e);
    }
    put_error(("this libtorch has no fbgemm quantized engine (it has: " +
               (have.empty() ? std::string("none") : have) + ")")
                  .c_str(),
              err, n);
    return 0;
  } catch (const std::exception& e) {
    put_error(e.what(), err, n);
    return 0;
  }
}

// Packs a per-channel qint8 weight `[out, in]` and an optional f32 bias
// `[out]` (null for none). Returns an owned handle, or null with `err`.
void* em_qlinear_prepack(const at::Tensor* w, const at::Tensor* bias, char* err,
                         size_t n) {
  try {
    static const c10::OperatorHandle prepack = op("quantized::linear_prepack");
    torch::jit::Stack stack;
    stack.emplace_back(*w);
    if (bias != nullptr) {
      stack.emplace_back(*bias);
    } else {
      stack.emplace_back(c10::IValue());
    }
    prepack.callBoxed(&stack);
    return new c10::IValue(std::move(stack.at(0)));
  } catch (const std::exception& e) {
    put_error(e.what(), err, n);
    return nullptr;
  }
}

// `x: [N, in]` f32 through a packed weight: the activation is quantized
// per call (per tensor, its own min and max; `reduce_range` keeps it in 7
// bits, as PyTorch's x86 default does), multiplied in int8, and the
// result is f32 `[N, out]` with the bias added. Returns an owned tensor,
// or null with `err`.
at::Tensor* em_qlinear_dynamic(const at::Tensor* x, const void* packed,
                               int reduce_range, char* err, size_t n) {
  try {
    static const c10::OperatorHandle dynamic = op("quantized::linear_dynamic");
    torch::jit::Stack stack;
    stack.emplace_back(*x);
    stack.emplace_back(*static_cast<const c10::IValue*>(packed));
    stack.emplace_back(reduce_range != 0);
    dynamic.callBoxed(&stack);
    return new at::Tensor(std::move(stack.at(0)).toTensor());
  } catch (const std::exception& e) {
    put_error(e.what(), err, n);
    return nullptr;
  }
}

void em_qlinear_free(void* packed) { delete static_cast<c10::IValue*>(packed); }

}  // extern "C"
