// KvmError (lib/errors.ts) built and thrown from C++.
#pragma once

#include <napi.h>

// `new KvmError(err, ioctl, detail, syscall)`: code 'EINVAL', errno -22, syscall 'ioctl',
// ioctl 'KVM_X'. `err` is the positive errno, captured right after the failing call.
// `ioctl` and `detail` may be null.
Napi::Object MakeKvmError(Napi::Env env, int err, const char* ioctl, const char* detail = nullptr,
                          const char* syscall = "ioctl");

// Throws MakeKvmError(...) as a JS exception (a C++ Napi::Error until it crosses into JS).
[[noreturn]] void ThrowKvmError(Napi::Env env, int err, const char* ioctl, const char* detail = nullptr,
                                const char* syscall = "ioctl");
