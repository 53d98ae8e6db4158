module vwproxy.dev/benchmarks/fanoutwatch

go 1.22
