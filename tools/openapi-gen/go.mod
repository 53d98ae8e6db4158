module vwproxy/tools/openapi-gen

go 1.22
