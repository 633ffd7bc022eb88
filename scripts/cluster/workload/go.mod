module cluster.invalid/workload

go 1.22
