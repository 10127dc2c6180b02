"""Inference at full resolution, one job per module.

- `graphs`: a generator's traced inference graphs (`FastGenerator`): one pass, and the stages
  between instance norms; bfloat16 fast mode.
- `tiling`: which way a photo runs (`runs_whole`), norm-free tiles, band iteration
  (`enhance_rows`, `enhance_image`).
- `stream`: instance-norm photos stage by stage through a disk scratch file, exact.
- `images`: reading and writing photos at full depth.
- `driver`: `dped enhance` over files and folders, with the output sinks.

Callers make the graphs (`graphs.inference_graphs`) and hold them as long as they need them;
nothing here caches a model.
"""
