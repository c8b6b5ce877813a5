"""The build pipeline: settings (`config`), the stages (`data`, `training`, `optimize`, `verify`, `bundle`,
`reports`), their orchestration (`build`), the Python API (`api`) and the command line (`commands`).
`core` is the bottom layer every other module may use."""
