"""CUB-200-2011 (MESS: Agriculture and Biology): 200 bird species + background.

Images (``CUB_200_2011.tgz``) and the five-annotator soft masks (``segmentations.tgz``); as in
MESS, a pixel is bird where the mask's grey value exceeds 128, and the bird's class is its
species (the folder number ``001``-``200``). Splits from ``train_test_split.txt``. Images are
stored as MESS's prepare_cub_200.py re-saves them (PIL's JPEG, quality 75), which is what MESS
evaluates.
"""

import functools

import numpy as np

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.spec import MessSpec, Resource
from mopeft_jax.data.records import Pair

_SPECIES = (
    "Black-footed Albatross", "Laysan Albatross", "Sooty Albatross", "Groove billed Ani",
    "Crested Auklet", "Least Auklet", "Parakeet Auklet", "Rhinoceros Auklet",
    "Brewer Blackbird", "Red winged Blackbird", "Rusty Blackbird", "Yellow-headed Blackbird",
    "Bobolink", "Indigo Bunting", "Lazuli Bunting", "Painted Bunting", "Cardinal",
    "Spotted Catbird", "Gray Catbird", "Yellow-breasted Chat", "Eastern Towhee",
    "Chuck will Widow", "Brandt Cormorant", "Red-faced Cormorant", "Pelagic Cormorant",
    "Bronzed Cowbird", "Shiny Cowbird", "Brown Creeper", "American Crow", "Fish Crow",
    "Black-billed Cuckoo", "Mangrove Cuckoo", "Yellow-billed Cuckoo",
    "Gray-crowned Rosy-Finch", "Purple Finch", "Northern Flicker", "Acadian Flycatcher",
    "Great Crested Flycatcher", "Least Flycatcher", "Olive-sided Flycatcher",
    "Scissor-tailed Flycatcher", "Vermilion Flycatcher", "Yellow-bellied Flycatcher",
    "Frigatebird", "Northern Fulmar", "Gadwall", "American Goldfinch", "European Goldfinch",
    "Boat-tailed Grackle", "Eared Grebe", "Horned Grebe", "Pied-billed Grebe", "Western Grebe",
    "Blue Grosbeak", "Evening Grosbeak", "Pine Grosbeak", "Rose-breasted Grosbeak",
    "Pigeon Guillemot", "California Gull", "Glaucous-winged Gull", "Heermann Gull",
    "Herring Gull", "Ivory Gull", "Ring-billed Gull", "Slaty-backed Gull", "Western Gull",
    "Anna Hummingbird", "Ruby-throated Hummingbird", "Rufous Hummingbird", "Green Violetear",
    "Long-tailed Jaeger", "Pomarine Jaeger", "Blue Jay", "Florida Jay", "Green Jay",
    "Dark-eyed Junco", "Tropical Kingbird", "Gray Kingbird", "Belted Kingfisher",
    "Green Kingfisher", "Pied Kingfisher", "Ringed Kingfisher", "White-breasted Kingfisher",
    "Red-legged Kittiwake", "Horned Lark", "Pacific Loon", "Mallard", "Western Meadowlark",
    "Hooded Merganser", "Red-breasted Merganser", "Mockingbird", "Nighthawk",
    "Clark Nutcracker", "White-breasted Nuthatch", "Baltimore Oriole", "Hooded Oriole",
    "Orchard Oriole", "Scott Oriole", "Ovenbird", "Brown Pelican", "White Pelican",
    "Western Wood-Pewee", "Sayornis", "American Pipit", "Whip-poor-Will", "Horned Puffin",
    "Common Raven", "White-necked Raven", "American Redstart", "Geococcyx",
    "Loggerhead Shrike", "Great Grey Shrike", "Baird Sparrow", "Black-throated Sparrow",
    "Brewer Sparrow", "Chipping Sparrow", "Clay-colored Sparrow", "House Sparrow",
    "Field Sparrow", "Fox Sparrow", "Grasshopper Sparrow", "Harris Sparrow", "Henslow Sparrow",
    "Le Conte Sparrow", "Lincoln Sparrow", "Nelson Sharp-tailed Sparrow", "Savannah Sparrow",
    "Seaside Sparrow", "Song Sparrow", "Tree Sparrow", "Vesper Sparrow",
    "White-crowned Sparrow", "White-throated Sparrow", "Cape Glossy Starling", "Bank Swallow",
    "Barn Swallow", "Cliff Swallow", "Tree Swallow", "Scarlet Tanager", "Summer Tanager",
    "Artic Tern", "Black Tern", "Caspian Tern", "Common Tern", "Elegant Tern", "Forsters Tern",
    "Least Tern", "Green-tailed Towhee", "Brown Thrasher", "Sage Thrasher",
    "Black-capped Vireo", "Blue-headed Vireo", "Philadelphia Vireo", "Red-eyed Vireo",
    "Warbling Vireo", "White-eyed Vireo", "Yellow-throated Vireo", "Bay-breasted Warbler",
    "Black-and-white Warbler", "Black-throated Blue Warbler", "Blue-winged Warbler",
    "Canada Warbler", "Cape May Warbler", "Cerulean Warbler", "Chestnut-sided Warbler",
    "Golden-winged Warbler", "Hooded Warbler", "Kentucky Warbler", "Magnolia Warbler",
    "Mourning Warbler", "Myrtle Warbler", "Nashville Warbler", "Orange-crowned Warbler",
    "Palm Warbler", "Pine Warbler", "Prairie Warbler", "Prothonotary Warbler",
    "Swainson Warbler", "Tennessee Warbler", "Wilson Warbler", "Worm-eating Warbler",
    "Yellow Warbler", "Northern Waterthrush", "Louisiana Waterthrush", "Bohemian Waxwing",
    "Cedar Waxwing", "American Three-toed Woodpecker", "Pileated Woodpecker",
    "Red-bellied Woodpecker", "Red-cockaded Woodpecker", "Red-headed Woodpecker",
    "Downy Woodpecker", "Bewick Wren", "Cactus Wren", "Carolina Wren", "House Wren",
    "Marsh Wren", "Rock Wren", "Winter Wren", "Common Yellowthroat",
)  # fmt: skip
CLASSES = ("background",) + _SPECIES


def _read(images, image_path, masks, mask_path, species):
    bird = np.asarray(masks.image(mask_path).convert("L")) > 128
    return images.read(image_path), (bird * species).astype(np.uint8)


def _splits(src):
    images, masks = src["images"], src["masks"]
    files = dict(line.split(maxsplit=1) for line in images.text("images.txt").splitlines() if line)
    is_train = dict(
        line.split() for line in images.text("train_test_split.txt").splitlines() if line
    )
    splits = {"train": [], "test": []}
    for image_id, rel in sorted(files.items(), key=lambda kv: int(kv[0])):
        rel = rel.strip()  # "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg"
        mask_path = f"segmentations/{rel.rsplit('.', 1)[0]}.png"
        if not (images.exists(f"images/{rel}") and masks.exists(mask_path)):
            continue
        species = int(rel.split(".", 1)[0])
        split = "train" if is_train.get(image_id) == "1" else "test"
        read = functools.partial(_read, images, f"images/{rel}", masks, mask_path, species)
        splits[split].append(Pair(key=rel, file_name=rel, read=read))
    return splits


SPEC = register(
    MessSpec(
        name="cub_200",
        title="CUB-200",
        domain="Agriculture and Biology",
        homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
        description="Bird photographs of 200 species; the bird's mask carries its species.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="cub_200_sem_seg_test",
        resources=(
            Resource(
                key="images",
                names=("CUB_200_2011.tgz", "CUB_200_2011.tar.gz", "CUB_200_2011"),
                markers=("images.txt", "train_test_split.txt", "images"),
                description="CUB_200_2011.tgz, https://data.caltech.edu/records/65de6-vp158/"
                "files/CUB_200_2011.tgz",
            ),
            Resource(
                key="masks",
                names=("segmentations.tgz", "segmentations.tar.gz", "segmentations"),
                markers=("segmentations/*/*.png",),
                description="segmentations.tgz, https://data.caltech.edu/records/w9d68-gec53/"
                "files/segmentations.tgz",
            ),
        ),
        splits=_splits,
        resave_jpeg=True,
        notes="Images are the JPEGs MESS's prepare_cub_200.py re-saves (PIL, quality 75, after "
        "converting them to RGB) and evaluates, not the downloaded bytes.",
    )
)
