module eas-bench/loadgen

go 1.22
