"""One module per dvc.yaml stage, in the order the DAG runs them: check_params, make_demo,
ingest, split, make_pairs, train_sr, sr_infer, augment, train_classifier, evaluate, export,
predict, compare, crossval, report. Each parses its paths, calls the library and writes
its outputs; none imports another."""
