"""``vfmkd eval``: per-head metrics of any run (COCO box and mask scores) and the teacher-student
cosine of its feature terms."""
