from pruning_bench.cli import main

main()
