"""Detection augmentation as data: every sample's augmentation is a small record (``record``) drawn
from (seed, epoch, image id), and replaying a record (``replay``) gives the same pixels and targets
every time. The student, its targets and (next) the teacher features all replay the same record.
The recipe (``recipe``) is MMYOLO's YOLOv8 pipeline: Mosaic -> YOLOv5RandomAffine -> Albu ->
YOLOv5HSVRandomAug -> RandomFlip, MixUp for m/l/x, and a letterbox stage for the last epochs."""
