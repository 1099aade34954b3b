{
  "targets": [
    {
      "target_name": "host",
      "sources": ["native/host.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_c": ["-std=gnu11"]
    }
  ]
}
