/*
 * Host operations Node's fs module lacks, needed to extract files from an
 * image with full fidelity: nanosecond timestamps (fs.utimes goes through a
 * double and loses ~240 ns), device nodes/fifos/sockets, and extended
 * attributes. Everything acts on the link itself, never a symlink's target,
 * because an extractor recreates symlinks as they were stored.
 *
 * Calls are synchronous: each is a single short syscall, and keeping them
 * off the thread pool keeps ordering with the caller's other steps obvious.
 *
 * Failures throw errors shaped like Node's own fs errors (message
 * "CODE: description, syscall 'path'", plus code, errno, syscall, path) so
 * the TypeScript side can treat them like any fs.*Sync error.
 *
 * Paths and names may be given as strings (UTF-8) or Buffers (raw bytes):
 * btrfs names are arbitrary bytes and need not be valid UTF-8.
 */
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/sysmacros.h>
#endif

#if defined(__APPLE__)
/* macOS has no l*xattr family; the same calls take XATTR_NOFOLLOW instead. */
#define lsetxattr(p, n, v, s, f) setxattr((p), (n), (v), (s), 0, (f) | XATTR_NOFOLLOW)
#define lgetxattr(p, n, v, s) getxattr((p), (n), (v), (s), 0, XATTR_NOFOLLOW)
#define llistxattr(p, l, s) listxattr((p), (l), (s), XATTR_NOFOLLOW)
#define lremovexattr(p, n) removexattr((p), (n), XATTR_NOFOLLOW)
#endif

/* A NUL-terminated copy of a string or Buffer argument; free with free(). */
typedef struct {
  char *s;
  size_t len;
} cstr;

#define CHECK(env, call)                                                   \
  do {                                                                     \
    if ((call) != napi_ok) {                                               \
      rethrow_pending(env, #call);                                         \
      return NULL;                                                         \
    }                                                                      \
  } while (0)

static void rethrow_pending(napi_env env, const char *what) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) {
    const napi_extended_error_info *info = NULL;
    napi_get_last_error_info(env, &info);
    char msg[256];
    snprintf(msg, sizeof msg, "N-API call failed: %s (%s)", what,
             info && info->error_message ? info->error_message : "unknown");
    napi_throw_error(env, "ERR_NATIVE_HOST", msg);
  }
}

static void set_str(napi_env env, napi_value obj, const char *key, const char *val, size_t len) {
  napi_value v;
  if (napi_create_string_utf8(env, val, len, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

/* Throws an error the way libuv-backed fs calls report them. */
static void throw_errno(napi_env env, int err, const char *syscall, const cstr *path) {
  const char *code = uv_err_name(-err);
  /* strerror rather than uv_strerror: libuv words ENOTSUP as "operation not
   * supported on socket", which misleads for xattrs. Lower-cased to match
   * Node's message style. */
  char desc[128];
  snprintf(desc, sizeof desc, "%s", strerror(err));
  if (desc[0] >= 'A' && desc[0] <= 'Z' && !(desc[1] >= 'A' && desc[1] <= 'Z')) desc[0] = (char)(desc[0] - 'A' + 'a');
  size_t plen = path ? path->len : 0;
  size_t cap = strlen(code) + strlen(desc) + strlen(syscall) + plen + 16;
  char *msg = malloc(cap);
  if (!msg) {
    napi_throw_error(env, code, desc);
    return;
  }
  if (path)
    snprintf(msg, cap, "%s: %s, %s '%.*s'", code, desc, syscall, (int)plen, path->s);
  else
    snprintf(msg, cap, "%s: %s, %s", code, desc, syscall);
  napi_value jmsg, error, jerrno;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg) != napi_ok ||
      napi_create_error(env, NULL, jmsg, &error) != napi_ok) {
    free(msg);
    napi_throw_error(env, code, desc);
    return;
  }
  free(msg);
  set_str(env, error, "code", code, NAPI_AUTO_LENGTH);
  if (napi_create_int32(env, -err, &jerrno) == napi_ok) napi_set_named_property(env, error, "errno", jerrno);
  set_str(env, error, "syscall", syscall, NAPI_AUTO_LENGTH);
  if (path) set_str(env, error, "path", path->s, path->len);
  napi_throw(env, error);
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

/* Reads a string or Buffer argument; a NUL inside would silently cut the
 * name short, so it is rejected like Node rejects it in paths. */
static bool get_cstr(napi_env env, napi_value v, const char *what, cstr *out) {
  out->s = NULL;
  out->len = 0;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t == napi_string) {
    size_t len = 0;
    if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return false;
    out->s = malloc(len + 1);
    if (!out->s) return false;
    if (napi_get_value_string_utf8(env, v, out->s, len + 1, &len) != napi_ok) {
      free(out->s);
      out->s = NULL;
      return false;
    }
    out->len = len;
  } else {
    bool isbuf = false;
    if (napi_is_buffer(env, v, &isbuf) != napi_ok || !isbuf) {
      char msg[128];
      snprintf(msg, sizeof msg, "%s must be a string or Buffer", what);
      throw_type(env, msg);
      return false;
    }
    void *data = NULL;
    size_t len = 0;
    if (napi_get_buffer_info(env, v, &data, &len) != napi_ok) return false;
    out->s = malloc(len + 1);
    if (!out->s) return false;
    if (len) memcpy(out->s, data, len);
    out->s[len] = 0;
    out->len = len;
  }
  if (strlen(out->s) != out->len) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must not contain NUL bytes", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
    free(out->s);
    out->s = NULL;
    return false;
  }
  return true;
}

static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  if (argc < want) {
    char msg[64];
    snprintf(msg, sizeof msg, "expected %zu arguments, got %zu", want, argc);
    throw_type(env, msg);
    return false;
  }
  return true;
}

static bool get_i64(napi_env env, napi_value v, const char *what, int64_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t == napi_bigint) {
    bool lossless = false;
    if (napi_get_value_bigint_int64(env, v, out, &lossless) != napi_ok) return false;
    if (!lossless) {
      char msg[96];
      snprintf(msg, sizeof msg, "%s does not fit in 64 bits", what);
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
      return false;
    }
    return true;
  }
  if (t == napi_number) {
    double d;
    if (napi_get_value_double(env, v, &d) != napi_ok) return false;
    if (d != d || d != (double)(int64_t)d) {
      char msg[96];
      snprintf(msg, sizeof msg, "%s must be an integer", what);
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
      return false;
    }
    *out = (int64_t)d;
    return true;
  }
  char msg[96];
  snprintf(msg, sizeof msg, "%s must be a bigint or number", what);
  throw_type(env, msg);
  return false;
}

static bool get_u32(napi_env env, napi_value v, const char *what, uint32_t *out) {
  int64_t x;
  if (!get_i64(env, v, what, &x)) return false;
  if (x < 0 || x > 0xffffffffLL) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s out of range", what);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return false;
  }
  *out = (uint32_t)x;
  return true;
}

static napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

/* lutimensNs(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec) */
static napi_value js_lutimens(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv)) return NULL;
  int64_t as, ans, ms, mns;
  if (!get_i64(env, argv[1], "atimeSec", &as) || !get_i64(env, argv[2], "atimeNsec", &ans) ||
      !get_i64(env, argv[3], "mtimeSec", &ms) || !get_i64(env, argv[4], "mtimeNsec", &mns))
    return NULL;
  if (ans < 0 || ans > 999999999 || mns < 0 || mns > 999999999) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "nanoseconds must be in 0..999999999");
    return NULL;
  }
  if ((int64_t)(time_t)as != as || (int64_t)(time_t)ms != ms) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "seconds do not fit this platform's time_t");
    return NULL;
  }
  cstr path;
  if (!get_cstr(env, argv[0], "path", &path)) return NULL;
  struct timespec ts[2];
  ts[0].tv_sec = (time_t)as;
  ts[0].tv_nsec = (long)ans;
  ts[1].tv_sec = (time_t)ms;
  ts[1].tv_nsec = (long)mns;
  int rc = utimensat(AT_FDCWD, path.s, ts, AT_SYMLINK_NOFOLLOW);
  if (rc != 0) throw_errno(env, errno, "utimensat", &path);
  free(path.s);
  return rc == 0 ? undefined(env) : NULL;
}

/* mknod(path, mode, major, minor): mode carries the S_IF* type and the
 * permission bits (the process umask still applies, as with mknod(2)). */
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  uint32_t mode, major_, minor_;
  if (!get_u32(env, argv[1], "mode", &mode) || !get_u32(env, argv[2], "major", &major_) ||
      !get_u32(env, argv[3], "minor", &minor_))
    return NULL;
  cstr path;
  if (!get_cstr(env, argv[0], "path", &path)) return NULL;
  int rc = mknod(path.s, (mode_t)mode, makedev(major_, minor_));
  if (rc != 0) throw_errno(env, errno, "mknod", &path);
  free(path.s);
  return rc == 0 ? undefined(env) : NULL;
}

/* lsetxattr(path, name, value, flags) */
static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  bool isbuf = false;
  CHECK(env, napi_is_buffer(env, argv[2], &isbuf));
  if (!isbuf) return throw_type(env, "value must be a Buffer");
  void *data = NULL;
  size_t len = 0;
  CHECK(env, napi_get_buffer_info(env, argv[2], &data, &len));
  uint32_t flags;
  if (!get_u32(env, argv[3], "flags", &flags)) return NULL;
  cstr path, name;
  if (!get_cstr(env, argv[0], "path", &path)) return NULL;
  if (!get_cstr(env, argv[1], "name", &name)) {
    free(path.s);
    return NULL;
  }
  /* a zero-length Buffer may carry a NULL data pointer; the kernel accepts
   * (NULL, 0) but some libcs do not, so point at a dummy byte */
  static const char empty = 0;
  int rc = lsetxattr(path.s, name.s, data ? data : &empty, len, (int)flags);
  if (rc != 0) throw_errno(env, errno, "lsetxattr", &path);
  free(path.s);
  free(name.s);
  return rc == 0 ? undefined(env) : NULL;
}

/* lgetxattr(path, name) -> Buffer */
static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  cstr path, name;
  if (!get_cstr(env, argv[0], "path", &path)) return NULL;
  if (!get_cstr(env, argv[1], "name", &name)) {
    free(path.s);
    return NULL;
  }
  napi_value result = NULL;
  /* The value can change size between the probe and the read; ERANGE means
   * it grew, so probe again. */
  for (;;) {
    ssize_t size = lgetxattr(path.s, name.s, NULL, 0);
    if (size < 0) {
      throw_errno(env, errno, "lgetxattr", &path);
      break;
    }
    char *buf = malloc(size > 0 ? (size_t)size : 1);
    if (!buf) {
      throw_errno(env, ENOMEM, "lgetxattr", &path);
      break;
    }
    ssize_t got = lgetxattr(path.s, name.s, buf, (size_t)size);
    if (got < 0) {
      int e = errno;
      free(buf);
      if (e == ERANGE) continue;
      throw_errno(env, e, "lgetxattr", &path);
      break;
    }
    napi_status st = napi_create_buffer_copy(env, (size_t)got, buf, NULL, &result);
    free(buf);
    if (st != napi_ok) {
      rethrow_pending(env, "napi_create_buffer_copy");
      result = NULL;
    }
    break;
  }
  free(path.s);
  free(name.s);
  return result;
}

/* llistxattr(path) -> string[] */
static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  cstr path;
  if (!get_cstr(env, argv[0], "path", &path)) return NULL;
  napi_value result = NULL;
  for (;;) {
    ssize_t size = llistxattr(path.s, NULL, 0);
    if (size < 0) {
      throw_errno(env, errno, "llistxattr", &path);
      break;
    }
    char *buf = malloc(size > 0 ? (size_t)size : 1);
    if (!buf) {
      throw_errno(env, ENOMEM, "llistxattr", &path);
      break;
    }
    ssize_t got = llistxattr(path.s, buf, (size_t)size);
    if (got < 0) {
      int e = errno;
      free(buf);
      if (e == ERANGE) continue;
      throw_errno(env, e, "llistxattr", &path);
      break;
    }
    napi_value arr;
    if (napi_create_array(env, &arr) != napi_ok) {
      free(buf);
      rethrow_pending(env, "napi_create_array");
      break;
    }
    uint32_t idx = 0;
    bool ok = true;
    for (ssize_t off = 0; off < got;) {
      size_t n = strnlen(buf + off, (size_t)(got - off));
      napi_value s;
      if (napi_create_string_utf8(env, buf + off, n, &s) != napi_ok ||
          napi_set_element(env, arr, idx++, s) != napi_ok) {
        ok = false;
        break;
      }
      off += (ssize_t)n + 1;
    }
    free(buf);
    if (!ok) {
      rethrow_pending(env, "napi_set_element");
      break;
    }
    result = arr;
    break;
  }
  free(path.s);
  return result;
}

/* lremovexattr(path, name) */
static napi_value js_lremovexattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  cstr path, name;
  if (!get_cstr(env, argv[0], "path", &path)) return NULL;
  if (!get_cstr(env, argv[1], "name", &name)) {
    free(path.s);
    return NULL;
  }
  int rc = lremovexattr(path.s, name.s);
  if (rc != 0) throw_errno(env, errno, "lremovexattr", &path);
  free(path.s);
  free(name.s);
  return rc == 0 ? undefined(env) : NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"lutimensNs", NULL, js_lutimens, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mknod", NULL, js_mknod, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lremovexattr", NULL, js_lremovexattr, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
