# embed_json.cmake — docs/openapi.json into C at build time (no runtime
# dependency on the source tree, no xxd):
#   cmake -DIN=file.json -DOUT=file.c -DSYM=cx_openapi -P embed_json.cmake
# defines SYM_json[] (NUL-terminated), SYM_json_len and SYM_etag (a strong
# ETag from the SHA-256 of the bytes).  A file that is not JSON fails the build.
file(READ "${IN}" text)
string(JSON kind ERROR_VARIABLE jerr TYPE "${text}")
if(jerr OR NOT kind STREQUAL "OBJECT")
  message(FATAL_ERROR "${IN} is not a JSON object: ${jerr}")
endif()
file(READ "${IN}" hex HEX)
file(SHA256 "${IN}" sum)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(SUBSTRING "${sum}" 0 32 tag)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
set(c "/* generated from ${IN} by cmake/embed_json.cmake: do not edit */\n#include <stddef.h>\n\n")
string(APPEND c "const unsigned char ${SYM}_json[] = {\n${bytes}0x00};\n")
string(APPEND c "const size_t ${SYM}_json_len = ${len};\n")
string(APPEND c "const char ${SYM}_etag[] = \"\\\"${tag}\\\"\";\n")
file(WRITE "${OUT}.tmp" "${c}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
