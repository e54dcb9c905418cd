# The kvm_dirty addon (node-gyp). CMakeLists.txt builds the same sources for cmake-js; both
# read the list from native/sources.json.
{
  "targets": [
    {
      "target_name": "kvm_dirty",
      "conditions": [
        ["OS=='linux'", {
          "sources": ["<!@(node -p \"require('./native/sources.json').join(' ')\")"],
          "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
          "defines": ["NAPI_VERSION=8"],
          "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
          "ldflags": ["-pthread"]
        }]
      ]
    }
  ]
}
