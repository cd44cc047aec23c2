"""``vfmkd transfer``: do distilled backbones beat the ones users would otherwise start from?"""
