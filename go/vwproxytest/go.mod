module vwproxy.dev/go/vwproxytest

go 1.22
