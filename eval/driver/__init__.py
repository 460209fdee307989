"""`npueval run`: the devices (fleet), the plan (blocks), the dispatch, the results folder and the
reduction into results.json."""
