//! A stand-in for NVIDIA's `libnvidia-ml.so.1`, so that the GPU telemetry
//! path (`host/src/telemetry/gpu.rs`, the sampler, the energy meter, the
//! reports) runs end to end on machines without a GPU, CI included.
//!
//! `nvml-wrapper` opens `libnvidia-ml.so.1` with `dlopen` and looks every
//! entry point up by name, so a test copies this library under that name
//! into a folder and puts the folder on `LD_LIBRARY_PATH`. Only the entry
//! points engine-matrix calls exist; `nvml-wrapper` reports any other as
//! a missing symbol (an error, not a crash).
//!
//! The functions keep NVML's C ABI and its contract where a caller could
//! get it wrong: a reference count of `nvmlInit_v2` / `nvmlShutdown`
//! (`UNINITIALIZED` outside it), `INVALID_ARGUMENT` for null pointers and
//! unknown handles, `INSUFFICIENT_SIZE` for short string buffers, and the
//! struct version check of `nvmlDeviceGetMemoryInfo_v2`
//! (`ARGUMENT_VERSION_MISMATCH`).
//!
//! # What the devices read
//!
//! Set by environment variables (read at each call), so a test knows
//! every figure the run must report:
//!
//! * `FAKE_NVML_DEVICES`: how many devices (default 1; 0 is valid).
//! * `FAKE_NVML_POWER_W`: device `i` draws `(i + 1) ×` this many watts,
//!   constantly (default 50).
//! * `FAKE_NVML_INIT_ERROR`: an `nvmlReturn_t` that `nvmlInit_v2` returns
//!   (9, `DRIVER_NOT_LOADED`, is what a machine with the library but no
//!   driver gives).
//! * `FAKE_NVML_NO_ENERGY=1`: the energy counter is `NOT_SUPPORTED`, as on
//!   GPUs older than Volta.
//! * `FAKE_NVML_INIT_MB`: `nvmlInit_v2` allocates and touches this many
//!   MiB, kept until the process ends, as the real library's own state
//!   (tens of MB) is.
//! * `FAKE_NVML_LOG`: a file to which every `nvmlInit_v2` and
//!   `nvmlShutdown` appends a line `<pid> <function> <return code>`, so a
//!   test knows the fake was loaded, and by which processes.
//!
//! Device `i` is named `fake GPU i`, has UUID `GPU-fake-i`, 80 GiB of
//! memory of which `(i + 1)` GiB are used, SM clock `1980 + i` MHz,
//! memory clock 2619 MHz and temperature `40 + i` °C. Its energy counter
//! is its power times `CLOCK_MONOTONIC` (mJ since boot, the stand-in for
//! "since the driver loaded"): the same counter in every process, as a
//! device's is, which matters because engine-matrix reads it from the host
//! (idle baseline) and from its worker processes (cells).

use std::ffi::{c_char, c_uint, c_ulonglong, c_void};
use std::sync::atomic::{AtomicU32, Ordering};

type NvmlReturn = c_uint;
type NvmlDevice = *mut c_void;

const SUCCESS: NvmlReturn = 0;
const UNINITIALIZED: NvmlReturn = 1;
const INVALID_ARGUMENT: NvmlReturn = 2;
const NOT_SUPPORTED: NvmlReturn = 3;
const INSUFFICIENT_SIZE: NvmlReturn = 7;
const ARGUMENT_VERSION_MISMATCH: NvmlReturn = 25;

const CLOCK_GRAPHICS: c_uint = 0;
const CLOCK_SM: c_uint = 1;
const CLOCK_MEM: c_uint = 2;
const TEMPERATURE_GPU: c_uint = 0;

const GIB: u64 = 1 << 30;
/// The driver version reported.
pub const DRIVER_VERSION: &str = "555.42.06";

/// `nvmlInit_v2` calls not yet matched by `nvmlShutdown`.
static INITS: AtomicU32 = AtomicU32::new(0);

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn devices() -> u32 {
    env_u32("FAKE_NVML_DEVICES", 1)
}

fn initialized() -> bool {
    INITS.load(Ordering::SeqCst) > 0
}

/// The device index behind a handle (handles are `index + 1`).
fn index_of(device: NvmlDevice) -> Option<u32> {
    let i = (device as usize).checked_sub(1)?;
    let i = u32::try_from(i).ok()?;
    (i < devices()).then_some(i)
}

fn power_mw(index: u32) -> u32 {
    env_u32("FAKE_NVML_POWER_W", 50)
        .saturating_mul(1000)
        .saturating_mul(index + 1)
}

fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// Copies `text` and its NUL into a caller's buffer of `len` bytes.
///
/// # Safety
/// `buf` must be null or point to `len` writable bytes.
unsafe fn write_str(text: &str, buf: *mut c_char, len: c_uint) -> NvmlReturn {
    if buf.is_null() {
        return INVALID_ARGUMENT;
    }
    if text.len() + 1 > len as usize {
        return INSUFFICIENT_SIZE;
    }
    std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, text.len());
    *buf.add(text.len()) = 0;
    SUCCESS
}

/// Checks initialisation and the handle, then writes `value` to `out`.
///
/// # Safety
/// `out` must be null or valid for a write of `T`.
unsafe fn device_query<T>(
    device: NvmlDevice,
    out: *mut T,
    value: impl FnOnce(u32) -> Result<T, NvmlReturn>,
) -> NvmlReturn {
    if !initialized() {
        return UNINITIALIZED;
    }
    let Some(i) = index_of(device) else {
        return INVALID_ARGUMENT;
    };
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    match value(i) {
        Ok(v) => {
            out.write(v);
            SUCCESS
        }
        Err(e) => e,
    }
}

/// Appends `<pid> <function> <code>` to `$FAKE_NVML_LOG`, if set.
fn log(function: &str, code: NvmlReturn) -> NvmlReturn {
    if let Some(path) = std::env::var_os("FAKE_NVML_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            // One write per line: lines from processes never interleave.
            let _ = f.write_all(format!("{} {function} {code}\n", std::process::id()).as_bytes());
        }
    }
    code
}

#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> NvmlReturn {
    let code = match std::env::var("FAKE_NVML_INIT_ERROR")
        .ok()
        .and_then(|v| v.trim().parse::<NvmlReturn>().ok())
    {
        Some(e) if e != SUCCESS => e,
        _ => {
            if INITS.fetch_add(1, Ordering::SeqCst) == 0 {
                let mb = env_u32("FAKE_NVML_INIT_MB", 0) as usize;
                if mb > 0 {
                    // Touched (not zeroed pages left unmapped), then kept.
                    std::hint::black_box(Box::leak(vec![1u8; mb << 20].into_boxed_slice()));
                }
            }
            SUCCESS
        }
    };
    log("nvmlInit_v2", code)
}

#[no_mangle]
pub extern "C" fn nvmlShutdown() -> NvmlReturn {
    let code = match INITS.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
        Ok(_) => SUCCESS,
        Err(_) => UNINITIALIZED,
    };
    log("nvmlShutdown", code)
}

/// # Safety
/// `count` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> NvmlReturn {
    if !initialized() {
        return UNINITIALIZED;
    }
    if count.is_null() {
        return INVALID_ARGUMENT;
    }
    count.write(devices());
    SUCCESS
}

/// # Safety
/// `version` must be null or point to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    len: c_uint,
) -> NvmlReturn {
    if !initialized() {
        return UNINITIALIZED;
    }
    write_str(DRIVER_VERSION, version, len)
}

/// # Safety
/// `device` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut NvmlDevice,
) -> NvmlReturn {
    if !initialized() {
        return UNINITIALIZED;
    }
    if device.is_null() || index >= devices() {
        return INVALID_ARGUMENT;
    }
    device.write((index as usize + 1) as NvmlDevice);
    SUCCESS
}

/// Checks initialisation and the handle, then writes device `i`'s
/// `text(i)` to a caller's buffer.
///
/// # Safety
/// `buf` must be null or point to `len` writable bytes.
unsafe fn device_str(
    device: NvmlDevice,
    buf: *mut c_char,
    len: c_uint,
    text: impl FnOnce(u32) -> String,
) -> NvmlReturn {
    if !initialized() {
        return UNINITIALIZED;
    }
    match index_of(device) {
        Some(i) => write_str(&text(i), buf, len),
        None => INVALID_ARGUMENT,
    }
}

/// # Safety
/// `name` must be null or point to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: NvmlDevice,
    name: *mut c_char,
    len: c_uint,
) -> NvmlReturn {
    device_str(device, name, len, |i| format!("fake GPU {i}"))
}

/// # Safety
/// `uuid` must be null or point to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: NvmlDevice,
    uuid: *mut c_char,
    len: c_uint,
) -> NvmlReturn {
    device_str(device, uuid, len, |i| format!("GPU-fake-{i}"))
}

/// `nvmlMemory_v2_t`.
#[repr(C)]
pub struct Memory2 {
    pub version: c_uint,
    pub total: c_ulonglong,
    pub reserved: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

/// `NVML_STRUCT_VERSION(Memory, 2)`.
const MEMORY_V2: c_uint = (std::mem::size_of::<Memory2>() | (2 << 24)) as c_uint;

/// # Safety
/// `memory` must be null or point to a `nvmlMemory_v2_t`.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: NvmlDevice,
    memory: *mut Memory2,
) -> NvmlReturn {
    if !initialized() {
        return UNINITIALIZED;
    }
    let Some(i) = index_of(device) else {
        return INVALID_ARGUMENT;
    };
    if memory.is_null() {
        return INVALID_ARGUMENT;
    }
    if (*memory).version != MEMORY_V2 {
        return ARGUMENT_VERSION_MISMATCH;
    }
    let (total, reserved, used) = (80 * GIB, GIB / 2, (u64::from(i) + 1) * GIB);
    (*memory).total = total;
    (*memory).reserved = reserved;
    (*memory).used = used;
    (*memory).free = total - reserved - used;
    SUCCESS
}

/// # Safety
/// `power` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(
    device: NvmlDevice,
    power: *mut c_uint,
) -> NvmlReturn {
    device_query(device, power, |i| Ok(power_mw(i)))
}

/// # Safety
/// `energy` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTotalEnergyConsumption(
    device: NvmlDevice,
    energy: *mut c_ulonglong,
) -> NvmlReturn {
    device_query(device, energy, |i| {
        if env_u32("FAKE_NVML_NO_ENERGY", 0) != 0 {
            return Err(NOT_SUPPORTED);
        }
        // mW × ns / 1e9 = mJ.
        Ok((u128::from(power_mw(i)) * monotonic_ns() / 1_000_000_000) as c_ulonglong)
    })
}

/// # Safety
/// `clock` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: NvmlDevice,
    kind: c_uint,
    clock: *mut c_uint,
) -> NvmlReturn {
    device_query(device, clock, |i| match kind {
        CLOCK_GRAPHICS | CLOCK_SM => Ok(1980 + i),
        CLOCK_MEM => Ok(2619),
        _ => Err(NOT_SUPPORTED),
    })
}

/// # Safety
/// `temperature` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: NvmlDevice,
    sensor: c_uint,
    temperature: *mut c_uint,
) -> NvmlReturn {
    device_query(device, temperature, |i| match sensor {
        TEMPERATURE_GPU => Ok(40 + i),
        _ => Err(INVALID_ARGUMENT),
    })
}
