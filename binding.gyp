{
  "targets": [
    {
      "target_name": "blockio",
      "sources": ["native/blockio.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
      "cflags!": ["-fno-exceptions"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
