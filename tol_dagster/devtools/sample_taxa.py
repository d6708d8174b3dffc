"""Hand-picked names for the sample generator: real lineages on top, word lists for the long tail.

`ORDERS` is the skeleton (kingdom to order) with each order's share of rows in percent, shaped
after TreeOfLife-200M: Animalia and Plantae near half each, huge Lepidoptera, Passeriformes and
Asterales blocks, and the upstream NULL holes (ray-finned fishes with no class, Squamata and
Testudines in the class slot with no order). `SPECIES` are real lineages the README and the tests
name, placed into that skeleton with their own shares; everything else is generated.
Fields are `|`-separated and `-` is NULL.
"""

from __future__ import annotations

from typing import NamedTuple

NULL = "-"


class OrderRow(NamedTuple):
    """One order of the skeleton: its lineage, its share of rows (%), a noun for common names."""

    kingdom: str
    phylum: str | None
    klass: str | None
    order: str | None
    percent: float
    noun: str
    marine: bool


class SpeciesRow(NamedTuple):
    """A real species with its lineage, authority, common name and share of rows (%)."""

    lineage: tuple[str | None, ...]  # kingdom .. genus
    epithet: str
    authority: str
    common_name: str | None
    percent: float


# kingdom|phylum|class|order|percent|noun|marine
_ORDERS = """
Animalia|Annelida|Clitellata|Crassiclitellata|0.1|Earthworm|
Animalia|Arthropoda|Arachnida|Araneae|1.0|Spider|
Animalia|Arthropoda|Arachnida|Opiliones|0.1|Harvestman|
Animalia|Arthropoda|Arachnida|Ixodida|0.05|Tick|
Animalia|Arthropoda|Chilopoda|Scolopendromorpha|0.05|Centipede|
Animalia|Arthropoda|Collembola|Entomobryomorpha|0.05|Springtail|
Animalia|Arthropoda|Diplopoda|Polydesmida|0.1|Millipede|
Animalia|Arthropoda|Insecta|Blattodea|0.1|Cockroach|
Animalia|Arthropoda|Insecta|Coleoptera|2.8|Beetle|
Animalia|Arthropoda|Insecta|Dermaptera|0.05|Earwig|
Animalia|Arthropoda|Insecta|Diptera|1.8|Fly|
Animalia|Arthropoda|Insecta|Ephemeroptera|0.1|Mayfly|
Animalia|Arthropoda|Insecta|Hemiptera|1.8|Bug|
Animalia|Arthropoda|Insecta|Hymenoptera|2.5|Wasp|
Animalia|Arthropoda|Insecta|Lepidoptera|9.5|Moth|
Animalia|Arthropoda|Insecta|Mantodea|0.2|Mantis|
Animalia|Arthropoda|Insecta|Neuroptera|0.1|Lacewing|
Animalia|Arthropoda|Insecta|Odonata|1.8|Dragonfly|
Animalia|Arthropoda|Insecta|Orthoptera|1.0|Grasshopper|
Animalia|Arthropoda|Insecta|Phasmida|0.05|Stick Insect|
Animalia|Arthropoda|Insecta|Trichoptera|0.05|Caddisfly|
Animalia|Arthropoda|Malacostraca|Decapoda|0.3|Crab|m
Animalia|Arthropoda|Malacostraca|Isopoda|0.1|Woodlouse|
Animalia|Chordata|Amphibia|Anura|0.7|Frog|
Animalia|Chordata|Amphibia|Caudata|0.15|Salamander|
Animalia|Chordata|Aves|Accipitriformes|1.0|Hawk|
Animalia|Chordata|Aves|Anseriformes|1.5|Duck|
Animalia|Chordata|Aves|Apodiformes|0.4|Hummingbird|
Animalia|Chordata|Aves|Charadriiformes|1.2|Plover|
Animalia|Chordata|Aves|Columbiformes|0.5|Dove|
Animalia|Chordata|Aves|Coraciiformes|0.2|Kingfisher|
Animalia|Chordata|Aves|Falconiformes|0.2|Falcon|
Animalia|Chordata|Aves|Galliformes|0.4|Quail|
Animalia|Chordata|Aves|Gruiformes|0.3|Rail|
Animalia|Chordata|Aves|Passeriformes|8.0|Warbler|
Animalia|Chordata|Aves|Pelecaniformes|0.8|Heron|
Animalia|Chordata|Aves|Piciformes|0.5|Woodpecker|
Animalia|Chordata|Aves|Psittaciformes|0.2|Parrot|
Animalia|Chordata|Aves|Rheiformes|0.02|Rhea|
Animalia|Chordata|Aves|Sphenisciformes|0.05|Penguin|m
Animalia|Chordata|Aves|Strigiformes|0.3|Owl|
Animalia|Chordata|Aves|Suliformes|0.3|Cormorant|m
Animalia|Chordata|Elasmobranchii|Carcharhiniformes|0.03|Shark|m
Animalia|Chordata|Elasmobranchii|Myliobatiformes|0.02|Ray|m
Animalia|Chordata|Mammalia|Artiodactyla|0.8|Deer|
Animalia|Chordata|Mammalia|Carnivora|1.2|Weasel|
Animalia|Chordata|Mammalia|Chiroptera|0.1|Bat|
Animalia|Chordata|Mammalia|Didelphimorphia|0.05|Opossum|
Animalia|Chordata|Mammalia|Eulipotyphla|0.08|Shrew|
Animalia|Chordata|Mammalia|Lagomorpha|0.2|Hare|
Animalia|Chordata|Mammalia|Primates|0.12|Monkey|
Animalia|Chordata|Mammalia|Rodentia|0.7|Squirrel|
Animalia|Chordata|Squamata|-|0.9|Lizard|
Animalia|Chordata|Testudines|-|0.35|Turtle|m
Animalia|Chordata|-|Centrarchiformes|0.2|Sunfish|
Animalia|Chordata|-|Cypriniformes|0.25|Minnow|
Animalia|Chordata|-|Esociformes|0.03|Pike|
Animalia|Chordata|-|Perciformes|0.5|Perch|m
Animalia|Chordata|-|Salmoniformes|0.15|Trout|
Animalia|Chordata|-|Scorpaeniformes|0.1|Rockfish|m
Animalia|Chordata|-|Tetraodontiformes|0.05|Pufferfish|m
Animalia|Cnidaria|Anthozoa|Actiniaria|0.1|Anemone|m
Animalia|Cnidaria|Anthozoa|Scleractinia|0.1|Coral|m
Animalia|Cnidaria|Hydrozoa|Anthoathecata|0.03|Hydroid|m
Animalia|Cnidaria|Scyphozoa|Semaeostomeae|0.05|Jelly|m
Animalia|Echinodermata|Asteroidea|Forcipulatida|0.08|Sea Star|m
Animalia|Echinodermata|Echinoidea|Camarodonta|0.04|Urchin|m
Animalia|Echinodermata|Holothuroidea|Synallactida|0.02|Sea Cucumber|m
Animalia|Mollusca|Bivalvia|Mytilida|0.05|Mussel|m
Animalia|Mollusca|Bivalvia|Venerida|0.05|Clam|m
Animalia|Mollusca|Cephalopoda|Octopoda|0.03|Octopus|m
Animalia|Mollusca|Gastropoda|Littorinimorpha|0.1|Periwinkle|m
Animalia|Mollusca|Gastropoda|Nudibranchia|0.15|Nudibranch|m
Animalia|Mollusca|Gastropoda|Stylommatophora|0.6|Snail|
Animalia|Porifera|Demospongiae|Haplosclerida|0.02|Sponge|m
Plantae|Bryophyta|Bryopsida|Bryales|0.15|Moss|
Plantae|Bryophyta|Bryopsida|Hypnales|0.4|Feather Moss|
Plantae|Bryophyta|Sphagnopsida|Sphagnales|0.05|Peat Moss|
Plantae|Charophyta|Charophyceae|Charales|0.02|Stonewort|
Plantae|Chlorophyta|Ulvophyceae|Ulvales|0.04|Sea Lettuce|m
Plantae|Marchantiophyta|Jungermanniopsida|Porellales|0.05|Scalewort|
Plantae|Marchantiophyta|Marchantiopsida|Marchantiales|0.1|Liverwort|
Plantae|Rhodophyta|Florideophyceae|Corallinales|0.03|Coralline Alga|m
Plantae|Tracheophyta|Liliopsida|Alismatales|0.5|Arum|
Plantae|Tracheophyta|Liliopsida|Arecales|0.4|Palm|
Plantae|Tracheophyta|Liliopsida|Asparagales|3.2|Orchid|
Plantae|Tracheophyta|Liliopsida|Liliales|1.0|Lily|
Plantae|Tracheophyta|Liliopsida|Poales|3.0|Sedge|
Plantae|Tracheophyta|Liliopsida|Zingiberales|0.2|Ginger|
Plantae|Tracheophyta|Lycopodiopsida|Lycopodiales|0.15|Clubmoss|
Plantae|Tracheophyta|Magnoliopsida|Apiales|1.0|Parsley|
Plantae|Tracheophyta|Magnoliopsida|Asterales|6.0|Daisy|
Plantae|Tracheophyta|Magnoliopsida|Boraginales|0.6|Forget-me-not|
Plantae|Tracheophyta|Magnoliopsida|Brassicales|1.2|Mustard|
Plantae|Tracheophyta|Magnoliopsida|Caryophyllales|2.8|Pink|
Plantae|Tracheophyta|Magnoliopsida|Cornales|0.3|Dogwood|
Plantae|Tracheophyta|Magnoliopsida|Dipsacales|0.6|Honeysuckle|
Plantae|Tracheophyta|Magnoliopsida|Ericales|2.2|Heath|
Plantae|Tracheophyta|Magnoliopsida|Fabales|3.5|Vetch|
Plantae|Tracheophyta|Magnoliopsida|Fagales|1.5|Oak|
Plantae|Tracheophyta|Magnoliopsida|Gentianales|1.2|Gentian|
Plantae|Tracheophyta|Magnoliopsida|Geraniales|0.3|Crane's-bill|
Plantae|Tracheophyta|Magnoliopsida|Lamiales|4.5|Mint|
Plantae|Tracheophyta|Magnoliopsida|Malpighiales|1.6|Violet|
Plantae|Tracheophyta|Magnoliopsida|Malvales|1.0|Mallow|
Plantae|Tracheophyta|Magnoliopsida|Myrtales|1.0|Willowherb|
Plantae|Tracheophyta|Magnoliopsida|Ranunculales|1.6|Buttercup|
Plantae|Tracheophyta|Magnoliopsida|Rosales|4.0|Rose|
Plantae|Tracheophyta|Magnoliopsida|Sapindales|1.4|Maple|
Plantae|Tracheophyta|Magnoliopsida|Saxifragales|0.6|Saxifrage|
Plantae|Tracheophyta|Magnoliopsida|Solanales|0.8|Nightshade|
Plantae|Tracheophyta|Pinopsida|Pinales|1.6|Pine|
Plantae|Tracheophyta|Polypodiopsida|Equisetales|0.2|Horsetail|
Plantae|Tracheophyta|Polypodiopsida|Polypodiales|1.3|Fern|
Fungi|Ascomycota|Lecanoromycetes|Lecanorales|0.35|Lichen|
Fungi|Ascomycota|Lecanoromycetes|Peltigerales|0.08|Pelt Lichen|
Fungi|Ascomycota|Lecanoromycetes|Teloschistales|0.1|Sunburst Lichen|
Fungi|Ascomycota|Leotiomycetes|Helotiales|0.06|Earthtongue|
Fungi|Ascomycota|Pezizomycetes|Pezizales|0.2|Cup Fungus|
Fungi|Ascomycota|Sordariomycetes|Hypocreales|0.08|Cordyceps|
Fungi|Ascomycota|Sordariomycetes|Xylariales|0.08|Candlesnuff|
Fungi|Basidiomycota|Agaricomycetes|Agaricales|1.6|Mushroom|
Fungi|Basidiomycota|Agaricomycetes|Boletales|0.4|Bolete|
Fungi|Basidiomycota|Agaricomycetes|Cantharellales|0.1|Chanterelle|
Fungi|Basidiomycota|Agaricomycetes|Hymenochaetales|0.1|Bracket|
Fungi|Basidiomycota|Agaricomycetes|Polyporales|0.5|Polypore|
Fungi|Basidiomycota|Agaricomycetes|Russulales|0.35|Brittlegill|
Fungi|Basidiomycota|Tremellomycetes|Tremellales|0.05|Jelly Fungus|
Chromista|Ciliophora|Oligohymenophorea|Peniculida|0.02|Ciliate|
Chromista|Foraminifera|Globothalamea|Rotaliida|0.02|Foram|m
Chromista|Myzozoa|Dinophyceae|Gonyaulacales|0.02|Dinoflagellate|m
Chromista|Ochrophyta|Bacillariophyceae|Naviculales|0.03|Diatom|
Chromista|Ochrophyta|Phaeophyceae|Fucales|0.25|Wrack|m
Chromista|Ochrophyta|Phaeophyceae|Laminariales|0.2|Kelp|m
Chromista|Oomycota|Peronosporea|Peronosporales|0.06|Downy Mildew|
Protozoa|Mycetozoa|Myxomycetes|Physarales|0.08|Slime Mold|
Protozoa|Mycetozoa|Myxomycetes|Stemonitidales|0.06|Slime Mold|
Protozoa|Mycetozoa|Myxomycetes|Trichiales|0.05|Slime Mold|
Bacteria|Cyanobacteria|Cyanophyceae|Nostocales|0.05|Cyanobacterium|
Bacteria|Cyanobacteria|Cyanophyceae|Oscillatoriales|0.04|Cyanobacterium|
Bacteria|Proteobacteria|Gammaproteobacteria|Enterobacterales|0.01|Bacterium|
Viruses|Kitrinoviricota|Alsuviricetes|Martellivirales|0.01|Virus|
Viruses|Pisuviricota|Pisoniviricetes|Picornavirales|0.01|Virus|
Archaea|Euryarchaeota|Halobacteria|Halobacteriales|0.01|Archaeon|
"""

# kingdom|phylum|class|order|family|genus|epithet|authority|common name|percent
_SPECIES = """
Animalia|Chordata|Mammalia|Carnivora|Felidae|Puma|concolor|(Linnaeus, 1771)|Cougar|0.04
Animalia|Chordata|Mammalia|Carnivora|Felidae|Panthera|leo|(Linnaeus, 1758)|Lion|0.03
Animalia|Chordata|Mammalia|Carnivora|Felidae|Panthera|tigris|(Linnaeus, 1758)|Tiger|0.02
Animalia|Chordata|Mammalia|Carnivora|Felidae|Felis|catus|Linnaeus, 1758|Domestic Cat|0.15
Animalia|Chordata|Mammalia|Carnivora|Felidae|Lynx|rufus|(Schreber, 1777)|Bobcat|0.05
Animalia|Chordata|Mammalia|Carnivora|Felidae|Lynx|lynx|(Linnaeus, 1758)|Eurasian Lynx|0.01
Animalia|Chordata|Mammalia|Carnivora|Felidae|Leopardus|pardalis|(Linnaeus, 1758)|Ocelot|0.01
Animalia|Chordata|Mammalia|Carnivora|Felidae|Acinonyx|jubatus|(Schreber, 1775)|Cheetah|0.015
Animalia|Chordata|Mammalia|Carnivora|Canidae|Canis|latrans|Say, 1823|Coyote|0.06
Animalia|Chordata|Mammalia|Carnivora|Canidae|Vulpes|vulpes|(Linnaeus, 1758)|Red Fox|0.08
Animalia|Chordata|Mammalia|Carnivora|Ursidae|Ursus|arctos|Linnaeus, 1758|Brown Bear|0.03
Animalia|Chordata|Mammalia|Carnivora|Ursidae|Ursus|arctus|Linnaeus, 1758|Brown Bear|0.001
Animalia|Chordata|Mammalia|Carnivora|Procyonidae|Procyon|lotor|(Linnaeus, 1758)|Common Raccoon|0.07
Animalia|Chordata|Mammalia|Primates|Hominidae|Homo|sapiens|Linnaeus, 1758|Human|0.02
Animalia|Chordata|Mammalia|Primates|Hominidae|Pan|troglodytes|(Blumenbach, 1775)|Chimpanzee|0.005
Animalia|Chordata|Mammalia|Primates|Hominidae|Gorilla|gorilla|(Savage, 1847)|Western Gorilla|0.003
Animalia|Chordata|Mammalia|Primates|Cercopithecidae|Macaca|mulatta|(Zimmermann, 1780)|Rhesus Macaque|0.01
Animalia|Chordata|Mammalia|Primates|Cercopithecidae|Macaca|fascicularis|(Raffles, 1821)|Crab-eating Macaque|0.01
Animalia|Chordata|Mammalia|Primates|Cercopithecidae|Papio|anubis|(Lesson, 1827)|Olive Baboon|0.008
Animalia|Chordata|Mammalia|Primates|Cercopithecidae|Chlorocebus|pygerythrus|(F. Cuvier, 1821)|Vervet Monkey|0.008
Animalia|Chordata|Mammalia|Primates|Atelidae|Alouatta|palliata|(Gray, 1849)|Mantled Howler|0.01
Animalia|Chordata|Mammalia|Primates|Atelidae|Ateles|geoffroyi|Kuhl, 1820|Geoffroy's Spider Monkey|0.006
Animalia|Chordata|Mammalia|Primates|Cebidae|Cebus|imitator|Thomas, 1903|Panamanian White-faced Capuchin|0.008
Animalia|Chordata|Mammalia|Primates|Lemuridae|Lemur|catta|Linnaeus, 1758|Ring-tailed Lemur|0.01
Animalia|Arthropoda|Insecta|Lepidoptera|Nymphalidae|Danaus|plexippus|(Linnaeus, 1758)|Monarch|0.3
Animalia|Arthropoda|Insecta|Lepidoptera|Nymphalidae|Vanessa|cardui|(Linnaeus, 1758)|Painted Lady|0.12
Animalia|Arthropoda|Insecta|Lepidoptera|Nymphalidae|Vanessa|atalanta|(Linnaeus, 1758)|Red Admiral|0.15
Animalia|Arthropoda|Insecta|Lepidoptera|Nymphalidae|Aglais|io|(Linnaeus, 1758)|Peacock|0.1
Animalia|Arthropoda|Insecta|Lepidoptera|Nymphalidae|Nymphalis|antiopa|(Linnaeus, 1758)|Mourning Cloak|0.05
Animalia|Arthropoda|Insecta|Lepidoptera|Nymphalidae|Limenitis|archippus|(Cramer, 1775)|Viceroy|0.05
Animalia|Arthropoda|Insecta|Lepidoptera|Nymphalidae|Junonia|coenia|Hübner, 1822|Common Buckeye|0.06
Animalia|Arthropoda|Insecta|Lepidoptera|Nymphalidae|Speyeria|cybele|(Fabricius, 1775)|Great Spangled Fritillary|0.03
Animalia|Arthropoda|Insecta|Lepidoptera|Pieridae|Pieris|rapae|(Linnaeus, 1758)|Cabbage White|0.15
Animalia|Arthropoda|Insecta|Lepidoptera|Pieridae|Pieris|napi|(Linnaeus, 1758)|Green-veined White|0.05
Animalia|Arthropoda|Insecta|Lepidoptera|Noctuidae|Agrotis|ipsilon|(Hufnagel, 1766)|Dark Sword-grass|0.01
Animalia|Arthropoda|Insecta|Lepidoptera|Erebidae|Catocala|ilia|(Cramer, 1776)|Ilia Underwing|0.005
Animalia|Arthropoda|Insecta|Hymenoptera|Apidae|Apis|mellifera|Linnaeus, 1758|Western Honey Bee|0.12
Animalia|Arthropoda|Insecta|Hymenoptera|Apidae|Bombus|terrestris|(Linnaeus, 1758)|Buff-tailed Bumble Bee|0.05
Animalia|Arthropoda|Insecta|Hymenoptera|Apidae|Bombus|impatiens|Cresson, 1863|Common Eastern Bumble Bee|0.05
Animalia|Arthropoda|Insecta|Coleoptera|Coccinellidae|Coccinella|septempunctata|Linnaeus, 1758|Seven-spotted Lady Beetle|0.06
Animalia|Chordata|Aves|Suliformes|Sulidae|Morus|bassanus|(Linnaeus, 1758)|Northern Gannet|0.03
Animalia|Chordata|Aves|Suliformes|Sulidae|Morus|serrator|(Gray, 1843)|Australasian Gannet|0.01
Animalia|Chordata|Aves|Suliformes|Sulidae|Morus|capensis|(Lichtenstein, 1823)|Cape Gannet|0.005
Animalia|Chordata|Aves|Accipitriformes|Accipitridae|Accipiter|cooperii|(Bonaparte, 1828)|Cooper's Hawk|0.06
Animalia|Chordata|Aves|Apodiformes|Trochilidae|Calypte|anna|(Lesson, 1829)|Anna's Hummingbird|0.08
Animalia|Chordata|Aves|Passeriformes|Turdidae|Turdus|migratorius|Linnaeus, 1766|American Robin|0.12
Animalia|Chordata|Aves|Passeriformes|Cardinalidae|Cardinalis|cardinalis|(Linnaeus, 1758)|Northern Cardinal|0.12
Animalia|Chordata|Aves|Rheiformes|Rheidae|Rhea|pennata|d'Orbigny, 1834|Lesser Rhea|0.005
Animalia|Chordata|-|Cypriniformes|Cyprinidae|Carassius|auratus|(Linnaeus, 1758)|Goldfish|0.02
Animalia|Chordata|-|Cypriniformes|Cyprinidae|Cyprinus|carpio|Linnaeus, 1758|Common Carp|0.02
Animalia|Chordata|-|Salmoniformes|Salmonidae|Salmo|trutta|Linnaeus, 1758|Brown Trout|0.02
Animalia|Chordata|-|Salmoniformes|Salmonidae|Oncorhynchus|mykiss|(Walbaum, 1792)|Rainbow Trout|0.02
Animalia|Chordata|-|Perciformes|Percidae|Perca|fluviatilis|Linnaeus, 1758|European Perch|0.01
Animalia|Chordata|-|Perciformes|Gasterosteidae|Gasterosteus|aculeatus|Linnaeus, 1758|Three-spined Stickleback|0.01
Animalia|Chordata|-|Centrarchiformes|Centrarchidae|Lepomis|macrochirus|Rafinesque, 1819|Bluegill|0.03
Animalia|Chordata|-|Esociformes|Esocidae|Esox|lucius|Linnaeus, 1758|Northern Pike|0.01
Animalia|Chordata|Squamata|-|Dactyloidae|Anolis|carolinensis|Voigt, 1832|Green Anole|0.05
Animalia|Chordata|Squamata|-|Phrynosomatidae|Sceloporus|occidentalis|Baird & Girard, 1852|Western Fence Lizard|0.06
Animalia|Chordata|Squamata|-|Lacertidae|Podarcis|muralis|(Laurenti, 1768)|Common Wall Lizard|0.04
Animalia|Chordata|Squamata|-|Colubridae|Thamnophis|sirtalis|(Linnaeus, 1758)|Common Garter Snake|0.04
Animalia|Chordata|Testudines|-|Emydidae|Trachemys|scripta|(Thunberg in Schoepff, 1792)|Pond Slider|0.05
Animalia|Chordata|Testudines|-|Emydidae|Chrysemys|picta|(Schneider, 1783)|Painted Turtle|0.04
Animalia|Chordata|Testudines|-|Cheloniidae|Chelonia|mydas|(Linnaeus, 1758)|Green Sea Turtle|0.02
Animalia|Mollusca|Gastropoda|Stylommatophora|Helicidae|Cornu|aspersum|(O.F.Müller, 1774)|Garden Snail|0.04
Plantae|Tracheophyta|Magnoliopsida|Rosales|Moraceae|Morus|alba|L.|White Mulberry|0.03
Plantae|Tracheophyta|Magnoliopsida|Rosales|Moraceae|Morus|rubra|L.|Red Mulberry|0.02
Plantae|Tracheophyta|Magnoliopsida|Rosales|Moraceae|Morus|nigra|L.|Black Mulberry|0.01
Plantae|Tracheophyta|Magnoliopsida|Ericales|Ericaceae|Pieris|japonica|(Thunb.) D.Don ex G.Don|Japanese Andromeda|0.01
Plantae|Tracheophyta|Magnoliopsida|Fagales|Fagaceae|Quercus|robur|L.|Pedunculate Oak|0.05
Plantae|Tracheophyta|Magnoliopsida|Fagales|Fagaceae|Quercus|alba|L.|White Oak|0.04
Plantae|Tracheophyta|Magnoliopsida|Asterales|Asteraceae|Taraxacum|officinale|F.H.Wigg.|Common Dandelion|0.1
Plantae|Tracheophyta|Magnoliopsida|Asterales|Asteraceae|Achillea|millefolium|L.|Common Yarrow|0.08
Plantae|Tracheophyta|Magnoliopsida|Asterales|Asteraceae|Bellis|perennis|L.|Common Daisy|0.05
Plantae|Tracheophyta|Magnoliopsida|Ranunculales|Ranunculaceae|Aquilegia|vulgaris|L.|European Columbine|0.02
Plantae|Tracheophyta|Magnoliopsida|Myrtales|Myrtaceae|Metrosideros|polymorpha|Gaudich.|ʻŌhiʻa lehua|0.01
Plantae|Tracheophyta|Liliopsida|Arecales|Arecaceae|Euterpe|oleracea|Mart.|Açaí Palm|0.005
Plantae|Tracheophyta|Magnoliopsida|Lamiales|Lamiaceae|Mentha|× piperita|L.|Peppermint|0.01
Fungi|Basidiomycota|Agaricomycetes|Agaricales|Amanitaceae|Amanita|muscaria|(L.) Lam.|Fly Agaric|0.05
Fungi|Basidiomycota|Agaricomycetes|Agaricales|Agaricaceae|Coprinus|comatus|(O.F.Müll.) Pers.|Shaggy Mane|0.02
Fungi|Basidiomycota|Agaricomycetes|Boletales|Boletaceae|Boletus|edulis|Bull.|King Bolete|0.02
Fungi|Basidiomycota|Agaricomycetes|Cantharellales|Hydnaceae|Cantharellus|cibarius|Fr.|Golden Chanterelle|0.015
Fungi|Basidiomycota|Agaricomycetes|Agaricales|Hygrophoraceae|Hygrocybe|coccinea|(Schaeff.) P.Kumm.|Scarlet Waxcap|0.005
"""

#: Informal names as BIOSCAN and museums write them (quotes, parentheses and commas kept).
INFORMAL_QUALIFIERS: tuple[str, ...] = (
    '"sp. 1"',
    '"sp. BIOUG-A"',
    "sp. (nr. minor)",
    "cf. alba, form B",
    "aff. major 'north'",
)

#: Specific epithets reused across genera (homonymous epithets are normal).
EPITHETS: tuple[str, ...] = (
    "alba", "alpina", "americana", "angustifolia", "annua", "arvensis", "aurea", "australis",
    "borealis", "brevis", "californica", "campestris", "canadensis", "chinensis", "communis",
    "cristata", "decora", "elegans", "europaea", "fasciata", "flava", "glabra", "gracilis",
    "grandis", "hirsuta", "insignis", "japonica", "lanceolata", "latifolia", "lutea", "major",
    "maculata", "maritima", "media", "mexicana", "minor", "montana", "multiflora", "nana",
    "nigra", "nivalis", "obscura", "occidentalis", "officinalis", "orientalis", "pallida",
    "palustris", "parva", "pratensis", "pumila", "punctata", "repens", "rosea", "rubra",
    "rufa", "rupestris", "sylvatica", "sylvestris", "tenuis", "tomentosa", "tristis",
    "umbrosa", "variabilis", "varia", "velutina", "vernalis", "virens", "viridis", "vulgaris",
)  # fmt: skip

#: Syllables for procedural genus stems (Latin-looking, ASCII like real generic names).
STEM_PARTS: tuple[tuple[str, ...], ...] = (
    ("Al", "Bra", "Cal", "Cte", "Dor", "Eu", "Gla", "Hy", "Ka", "Lep", "Me", "Neo", "Or",
     "Pa", "Phy", "Pro", "Rhi", "Sa", "Ste", "Tha", "Xe", "Zy", "Chry", "Myr", "Pte"),
    ("ba", "ce", "do", "ga", "li", "ma", "no", "pho", "ra", "si", "ta", "the", "to", "xa", "ri",
     "lo", "mi", "nu", "sto", "ve"),
    ("", "", "n", "r", "s", "l", "st", "nth", "ph", "c"),
)  # fmt: skip

#: Genus endings per kingdom family (animals vs the rest).
GENUS_ENDINGS: dict[str, tuple[str, ...]] = {
    "Animalia": ("us", "a", "ops", "ia", "ella", "ina", "odes", "ura", "is", "as", "on"),
    "other": ("um", "a", "is", "ia", "anthus", "ella", "ago", "opsis", "aria", "ites"),
}

#: Authors for procedural authorities; non-ASCII and apostrophes as in real ones.
ZOO_AUTHORS: tuple[str, ...] = (
    "Linnaeus", "Fabricius", "Hübner", "Guenée", "Walker", "Boisduval", "Ménétries", "Gmelin",
    "Say", "Latreille", "Müller", "Schrank", "Meigen", "Förster", "Horváth", "d'Orbigny",
    "O'Shaughnessy", "Sánchez-Ruiz", "Kirby & Spence", "Fernández, Pérez & Gil",
)  # fmt: skip
BOT_AUTHORS: tuple[str, ...] = (
    "L.", "Mill.", "Willd.", "DC.", "Hook.f.", "Thunb.", "Michx.", "Sm.", "Benth.", "Kunth",
    "Boiss.", "Jacq.", "Bolòs & Vigo", "Quél.", "Pers.", "Fr.", "Ehrh.", "Schltdl. & Cham.",
    "Hochst. ex A.Rich.", "Lév.",
)  # fmt: skip

#: Words for procedural common names; surnames give apostrophes and non-ASCII letters.
ADJECTIVES: tuple[str, ...] = (
    "Common", "Lesser", "Greater", "Eastern", "Western", "Northern", "Southern", "Spotted",
    "Striped", "Golden", "Scarlet", "Pale", "Dusky", "Hairy", "Little", "Giant", "Mountain",
    "Marsh", "Woodland", "Desert", "Coastal", "Banded", "Black-tailed", "White-lipped",
)  # fmt: skip
SURNAMES: tuple[str, ...] = (
    "Müller", "Sánchez", "O'Brien", "Núñez", "Ødegaard", "Björk", "Lê", "Nguyễn", "Dvořák",
    "Smith", "Wallace", "Bates", "Darwin", "Humboldt", "Jiménez", "François",
)  # fmt: skip

_PLACES = ("Tartu", "Kraków", "São Paulo", "Zürich", "Reykjavík", "Québec", "Göteborg",
           "Málaga", "Lund", "Nairobi", "Kunming", "Canberra", "Auckland", "Brno")  # fmt: skip
_COLLECTIONS = (
    "{} Natural History Museum",
    "University of {} Herbarium",
    "{} Biodiversity Data Centre",
)

#: GBIF publishers after iNaturalist.org: observation platforms, then museums and herbaria.
#: (name, kind, scope): kind is "citizen", "museum" or "camera"; scope is "any", "plant"
#: (plants and fungi) or "animal".
PUBLISHERS: tuple[tuple[str, str, str], ...] = (
    ("Observation.org", "citizen", "any"),
    ("naturgucker.de", "citizen", "any"),
    ("Pl@ntNet", "citizen", "plant"),
    ("Questagame", "citizen", "any"),
    ("Muséum national d'Histoire naturelle", "museum", "any"),
    ("Naturalis Biodiversity Center", "museum", "any"),
    ("Smithsonian Institution", "museum", "any"),
    ("Royal Botanic Gardens, Kew", "museum", "plant"),
    ("Natural History Museum (London)", "museum", "any"),
    ("Museum für Naturkunde Berlin", "museum", "animal"),
    ("Harvard University Herbaria", "museum", "plant"),
    ("Missouri Botanical Garden", "museum", "plant"),
    ("New York Botanical Garden", "museum", "plant"),
    ("The Field Museum", "museum", "any"),
    ("Tela Botanica", "citizen", "plant"),
    ("Wildlife Insights", "camera", "animal"),
    ("Naturhistorisches Museum Wien", "museum", "any"),
    ('Botanic Garden and Botanical Museum Berlin ("BGBM")', "museum", "plant"),
    ("Instituto de Investigación de Recursos Biológicos Alexander von Humboldt", "museum", "any"),
    ("Snapshot Safari", "camera", "animal"),
    # The long tail: regional collections, few rows each.
    *((pattern.format(place), "museum", "any") for place in _PLACES for pattern in _COLLECTIONS),
)

#: The 13 img_type values upstream (GBIF rows only).
IMG_CITIZEN = "Citizen Science"
IMG_CAMERA = "Camera-trap"
IMG_MUSEUM: dict[str, str] = {
    "plant": "Museum Specimen: Plant",
    "insect": "Museum Specimen: Insect",
    "invertebrate": "Museum Specimen: Invertebrate Zoology",
    "uncategorized": "Museum Specimen: Uncategorized",
    "fungi": "Museum Specimen: Fungi",
    "birds": "Museum Specimen: Vertebrate Zoology - Birds",
    "fishes": "Museum Specimen: Vertebrate Zoology - Fishes",
    "others": "Museum Specimen: Vertebrate Zoology - Others",
    "mammals": "Museum Specimen: Vertebrate Zoology - Mammals",
    "amphibians": "Museum Specimen: Vertebrate Zoology - Amphibians",
    "microbiology": "Museum Specimen: Microbiology",
}

#: basisOfRecord values (GBIF only) with weights per publisher kind.
BASIS_OF_RECORD: tuple[str, ...] = (
    "HUMAN_OBSERVATION",
    "PRESERVED_SPECIMEN",
    "MATERIAL_SAMPLE",
    "MACHINE_OBSERVATION",
    "FOSSIL_SPECIMEN",
    "LIVING_SPECIMEN",
    "OBSERVATION",
    "OCCURRENCE",
)
BASIS_WEIGHTS: dict[str, tuple[float, ...]] = {
    "citizen": (0.97, 0, 0, 0.01, 0, 0, 0.015, 0.005),
    "museum": (0.02, 0.85, 0.05, 0, 0.01, 0.05, 0, 0.02),
    "camera": (0, 0, 0, 1.0, 0, 0, 0, 0),
}


def _cell(text: str) -> str | None:
    return None if text == NULL else text


def _orders() -> tuple[OrderRow, ...]:
    rows = []
    for line in _ORDERS.strip().splitlines():
        kingdom, phylum, klass, order, percent, noun, marine = line.split("|")
        rows.append(
            OrderRow(
                kingdom,
                _cell(phylum),
                _cell(klass),
                _cell(order),
                float(percent),
                noun,
                marine == "m",
            )
        )
    return tuple(rows)


def _species() -> tuple[SpeciesRow, ...]:
    rows = []
    for line in _SPECIES.strip().splitlines():
        *lineage, epithet, authority, common, percent = line.split("|")
        rows.append(
            SpeciesRow(
                tuple(_cell(x) for x in lineage), epithet, authority, _cell(common), float(percent)
            )
        )
    return tuple(rows)


ORDERS: tuple[OrderRow, ...] = _orders()
SPECIES: tuple[SpeciesRow, ...] = _species()

#: Share of rows (%) per kingdom as upstream; orders are scaled to these.
KINGDOM_PERCENT: dict[str, float] = {
    "Animalia": 48.0,
    "Plantae": 47.0,
    "Fungi": 3.5,
    "Chromista": 0.6,
    "Protozoa": 0.2,
    "Bacteria": 0.1,
    "Viruses": 0.02,
    "Archaea": 0.01,
}
INCERTAE_SEDIS = "incertae sedis"
INCERTAE_SEDIS_PERCENT = 0.5
