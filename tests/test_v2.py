# placeholder
print("placeholder")
