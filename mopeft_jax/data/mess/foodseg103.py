"""FoodSeg103 (MESS: General): food images, 103 ingredient classes + background.

Labels are stored as class indices already. The archive is encrypted with the password that the
dataset's page publishes; reading it in Python is slow (about 1 MB/s), so it is extracted with
``unzip`` where that is installed, or the folder ``FoodSeg103`` may be given already unpacked.
"""

from mopeft_jax.data.mess.builder import register
from mopeft_jax.data.mess.labels import first_channel, stem_pairs
from mopeft_jax.data.mess.spec import MessSpec, Resource

CLASSES = (
    "background", "candy", "egg tart", "french fries", "chocolate", "biscuit", "popcorn",
    "pudding", "ice cream", "cheese butter", "cake", "wine", "milkshake", "coffee", "juice",
    "milk", "tea", "almond", "red beans", "cashew", "dried cranberries", "soy", "walnut",
    "peanut", "egg", "apple", "date", "apricot", "avocado", "banana", "strawberry", "cherry",
    "blueberry", "raspberry", "mango", "olives", "peach", "lemon", "pear", "fig", "pineapple",
    "grape", "kiwi", "melon", "orange", "watermelon", "steak", "pork", "chicken duck",
    "sausage", "fried meat", "lamb", "sauce", "crab", "fish", "shellfish", "shrimp", "soup",
    "bread", "corn", "hamburg", "pizza", "hanamaki baozi", "wonton dumplings", "pasta",
    "noodles", "rice", "pie", "tofu", "eggplant", "potato", "garlic", "cauliflower", "tomato",
    "kelp", "seaweed", "spring onion", "rape", "ginger", "okra", "lettuce", "pumpkin",
    "cucumber", "white radish", "carrot", "asparagus", "bamboo shoots", "broccoli",
    "celery stick", "cilantro mint", "snow peas", "cabbage", "bean sprouts", "onion", "pepper",
    "green beans", "French beans", "king oyster mushroom", "shiitake", "enoki mushroom",
    "oyster mushroom", "white button mushroom", "salad", "other ingredients",
)  # fmt: skip


def _splits(src):
    return {
        split: stem_pairs(
            src["data"],
            f"Images/img_dir/{split}",
            src["data"],
            f"Images/ann_dir/{split}",
            first_channel,
        )
        for split in ("train", "test")
    }


SPEC = register(
    MessSpec(
        name="foodseg103",
        title="FoodSeg103",
        domain="General",
        homepage="https://xiongweiwu.github.io/foodseg103.html",
        description="Food images with pixel labels of 103 ingredients.",
        classes=CLASSES,
        background_class=0,
        eval_split="test",
        mess_name="foodseg103_sem_seg_test",
        resources=(
            Resource(
                key="data",
                names=("FoodSeg103", "FoodSeg103.zip"),
                markers=("Images/img_dir/train", "Images/ann_dir/train", "Images/img_dir/test"),
                description="FoodSeg103.zip, https://research.larc.smu.edu.sg/downloads/"
                "datarepo/FoodSeg103.zip (or the folder it unpacks to).",
                # Published on https://github.com/LARC-CMU-SMU/FoodSeg103-Benchmark-v1.
                password=b"LARCdataset9947",
            ),
        ),
        splits=_splits,
    )
)
